"""Measurements behind the validity checks."""
import torch

from robustq_deploy.attacks.checks import looks_like_probabilities, repeat_difference, zero_gradient_mask


class HardRound(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 255) / 255)


def test_zero_gradient_mask(digits_float, digits_test):
    x, y = digits_test[0][:32], digits_test[1][:32]
    assert not zero_gradient_mask(digits_float, x, y).any()
    assert zero_gradient_mask(HardRound(digits_float), x, y).all()


def test_repeat_difference_and_probability_outputs(digits_float, digits_test):
    x = digits_test[0][:16]
    assert repeat_difference(digits_float, x) == 0.0
    noisy = torch.nn.Sequential(torch.nn.Dropout(0.5), digits_float).train()
    assert repeat_difference(noisy, x) > 0
    with torch.no_grad():
        logits = digits_float(x)
    assert not looks_like_probabilities(logits)
    assert looks_like_probabilities(logits.softmax(1))


def test_quantized_probabilities_are_probabilities():
    """A softmax quantized to levels of 1/256 (onnxruntime's QLinearSoftmax) sums to 1 only within
    half a level per class; logits on a grid, or values in [0, 1] that do not sum to 1, are not
    probabilities."""
    g = torch.Generator().manual_seed(0)
    for classes in (10, 100):
        logits = torch.randn(64, classes, generator=g) * 3
        q = torch.round(logits.softmax(1) * 256) / 256
        assert (q.sum(1) - 1).abs().max() > 1e-4  # the exact test alone misses them
        assert looks_like_probabilities(q)
        assert not looks_like_probabilities(torch.round(logits * 16) / 16)  # logits on a grid
        assert not looks_like_probabilities(torch.round(torch.rand(64, classes, generator=g) * 255) / 255)
        assert not looks_like_probabilities(q * 0.8)  # on a grid of 0.8/256, summing to 0.8
