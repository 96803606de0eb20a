"""White-box attacks on quantized twins rely on straight-through gradients (BPDA) through every
quantizer kind: integer, ternary and binary weights, integer, learned-step and binary
activations. Input gradients and latent-weight gradients must be non-zero for each."""
import pytest
import torch

from robustq_deploy.attacks import ThreatModel, input_grad, pgd
from robustq_deploy.config import LayerQuantConfig, QuantConfig
from robustq_deploy.models import build_model

from .conftest import digits_tensors, train_digits

KINDS = {
    "int8": ("digits-cnn", QuantConfig(weight_bits=8, act_bits=8)),
    "int4": ("digits-cnn", QuantConfig(weight_bits=4, act_bits=4)),
    "int2": ("digits-cnn", QuantConfig(weight_bits=2, act_bits=2)),
    "lsq-int4": ("digits-cnn", QuantConfig(weight_bits=4, act_bits=4, scale_mode="lsq")),
    "ternary": ("digits-cnn", QuantConfig(weight_bits="ternary", act_bits=8)),
    "binary-weights": ("digits-cnn", QuantConfig(weight_bits="binary", act_bits=8)),
    "bnn": ("mnist-bnn", QuantConfig(weight_bits="binary", act_bits="binary",
                                     layers={"conv1": LayerQuantConfig(weight_bits=8)})),
}


def _calibrated(arch: str, quant: QuantConfig) -> torch.nn.Module:
    """Untrained model with observers / LSQ steps / BatchNorm statistics set from real inputs."""
    torch.manual_seed(0)
    model = build_model(arch, quant, 10, (1, 8, 8))
    x, _ = digits_tensors("train")
    model.train()
    with torch.no_grad():
        for i in range(0, 512, 64):
            model(x[i:i + 64])
    return model.eval()


@pytest.mark.parametrize("kind", list(KINDS))
def test_input_and_weight_gradients_are_nonzero(kind):
    model = _calibrated(*KINDS[kind])
    x, y = digits_tensors("test")
    x, y = x[:64], y[:64]
    _, grad, _ = input_grad(model, x, y)
    nonzero = grad.flatten(1).abs().amax(1) > 0
    assert float(nonzero.float().mean()) >= 0.95, f"{kind}: input gradient is zero for too many points"
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.ndim > 1:
            assert p.grad is not None and float(p.grad.abs().max()) > 0, f"{kind}: no straight-through gradient for {name}"


def test_pgd_on_int8_twin_finds_adversarial_examples():
    model = train_digits(QuantConfig(weight_bits=8, act_bits=8), epochs=4)
    x, y = digits_tensors("test")
    x, y = x[:128], y[:128]
    th = ThreatModel("linf", 0.2)
    adv = th.to_grid(pgd(model, x, y, th, steps=10, generator=torch.Generator().manual_seed(0)), x)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
        robust = float((model(adv).argmax(1) == y).float().mean())
    assert clean > 0.8 and robust < clean - 0.3


def test_hard_rounding_without_ste_masks_the_gradient():
    """The contrast: plain torch.round (no straight-through estimator) has a zero gradient."""
    model = torch.nn.Sequential(_HardPixels(), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = digits_tensors("test")
    _, grad, _ = input_grad(model, x[:8], y[:8])
    assert float(grad.abs().max()) == 0.0


class _HardPixels(torch.nn.Module):
    def forward(self, x):
        return torch.round(x * 255) / 255
