"""Each quantization primitive against a hand-computed case (values worked out in the comments)."""
import math

import pytest
import torch

from robustq_deploy.quant import primitives as P


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_qrange():
    assert P.qrange(8, signed=True, narrow=True) == (-127, 127)
    assert P.qrange(8, signed=True) == (-128, 127)
    assert P.qrange(8, signed=False) == (0, 255)
    assert P.qrange(4, signed=True, narrow=True) == (-7, 7)
    assert P.qrange(2, signed=False) == (0, 3)


def test_affine_quantize_dequantize():
    # x / 0.1 + 3 = [5.6, -2, 13, 23] -> round [6, -2, 13, 23] -> clamp to [0, 15]
    q = P.quantize(t(0.26, -0.5, 1.0, 2.0), torch.tensor(0.1), 3, 0, 15)
    assert q.tolist() == [6.0, 0.0, 13.0, 15.0]
    assert torch.allclose(P.dequantize(q, torch.tensor(0.1), 3), t(0.3, -0.3, 1.0, 1.2))


def test_rounding_is_half_to_even():
    assert P.quantize(t(0.5, 1.5, 2.5, -0.5, -1.5), torch.tensor(1.0), 0, -8, 7).tolist() == [0, 2, 2, 0, -2]


def test_symmetric_scale_per_tensor_per_channel_and_clipped():
    w = t(1.0, -2.0, 0.5, 0.25).reshape(2, 2)
    assert torch.allclose(P.symmetric_scale(w, 8, per_channel=True), t(2 / 127, 0.5 / 127))
    assert torch.allclose(P.symmetric_scale(w, 8, per_channel=False), torch.tensor(2 / 127))
    assert torch.allclose(P.symmetric_scale(w, 4, per_channel=True, clip=0.5), t(1 / 7, 0.25 / 7))
    assert P.symmetric_scale(torch.zeros(2, 3), 8, per_channel=True).min() > 0  # no division by zero


def test_per_channel_quantize_broadcasts_on_axis_0():
    w = t(1.0, -2.0, 0.5, 0.25).reshape(2, 2)
    scale = t(1.0, 0.25)
    q = P.quantize(w, P.channel_view(scale, 2), 0, -7, 7)
    assert q.tolist() == [[1, -2], [2, 1]]


def test_round_ste_and_fake_quantize_gradients():
    x = t(0.26, 0.74).requires_grad_(True)
    y = P.round_ste(x * 10)
    y.sum().backward()
    assert y.tolist() == [3.0, 7.0] and x.grad.tolist() == [10.0, 10.0]

    x = t(0.26, 2.0, -0.04).requires_grad_(True)
    # scale 0.1, range [-7, 7]: 2.6 -> 3 (0.3), 20 -> clipped to 7 (0.7), -0.4 -> 0
    y = P.fake_quantize(x, torch.tensor(0.1), 0, -7, 7)
    assert torch.allclose(y, t(0.3, 0.7, 0.0))
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 1.0]  # clipped values pass no gradient


def test_fake_quantize_forward_is_exactly_dequantize_of_quantize():
    torch.manual_seed(0)
    x = torch.randn(4096) * 3
    for scale, zp, lo, hi in [(torch.tensor(0.037), 0, -127, 127), (torch.tensor(0.05), 3, 0, 255)]:
        exact = P.dequantize(P.quantize(x, scale, zp, lo, hi), scale, zp)
        assert torch.equal(P.fake_quantize(x, scale, zp, lo, hi), exact)
        assert torch.equal(P.fake_quantize(x.requires_grad_(True), scale, zp, lo, hi).detach(), exact)
        x = x.detach()


def test_fake_quantize_zero_point_gradient_mask_and_torch_func():
    # scale 0.5, zero point 2, range [0, 7]: v = x / 0.5 + 2 = (0, 3, 7.2, -0.2) -> q (0, 3, 7, 0)
    x = t(-1.0, 0.5, 2.6, -1.1).requires_grad_(True)
    y = P.fake_quantize(x, torch.tensor(0.5), 2, 0, 7)
    assert y.tolist() == [-1.0, 0.5, 2.5, -1.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]  # v = 0 is inside; 7.2 and -0.2 are clipped
    jac = torch.func.jacrev(lambda v: P.fake_quantize(v, torch.tensor(0.5), 2, 0, 7))(x.detach())
    assert torch.equal(jac, torch.diag(x.grad))


def test_lsq_forward_and_step_gradient():
    x = t(0.26, 3.0).requires_grad_(True)
    s = torch.tensor(0.1, requires_grad=True)
    y = P.lsq_fake_quantize(x, s, -7, 7, grad_scale=1.0)
    assert torch.allclose(y, t(0.3, 0.7))
    y.sum().backward()
    # d/ds: inside round(v) - v = 3 - 2.6 = 0.4; clipped: qmax = 7
    assert s.grad.item() == pytest.approx(7.4, abs=1e-5)
    assert x.grad.tolist() == [1.0, 0.0]
    s.grad = None
    P.lsq_fake_quantize(x, s, -7, 7, grad_scale=0.5).sum().backward()
    assert s.grad.item() == pytest.approx(3.7, abs=1e-5)


def test_lsq_grad_scale_and_init():
    assert P.lsq_grad_scale(100, 127) == pytest.approx(1 / math.sqrt(12700))
    # 2 * mean|x| / sqrt(qmax) = 2 * 2 / 2
    assert P.lsq_init_scale(t(1.0, -3.0), qmax=4).item() == pytest.approx(2.0)
    per_ch = P.lsq_init_scale(t(1.0, -3.0, 0.5, 0.5).reshape(2, 2), qmax=4, per_channel=True)
    assert torch.allclose(per_ch, t(2.0, 0.5))


def test_ternary_threshold_and_scale():
    w = t(0.1, -0.9, 0.5, -0.2)
    delta, alpha = P.ternary_params(w, per_channel=False)
    # mean|w| = 0.425, delta = 0.2975; survivors 0.9 and 0.5 -> alpha 0.7
    assert delta.item() == pytest.approx(0.2975)
    assert alpha.item() == pytest.approx(0.7)
    assert P.ternary_levels(w, delta).tolist() == [0, -1, 1, 0]


def test_ternary_per_channel():
    w = t(0.1, -0.9, 0.5, -0.2, 2.0, 2.0, 0.0, 0.0).reshape(2, 4)
    delta, alpha = P.ternary_params(w, per_channel=True)
    # channel 1: mean 1.0, delta 0.7, survivors 2 and 2 -> alpha 2
    assert torch.allclose(delta, t(0.2975, 0.7)) and torch.allclose(alpha, t(0.7, 2.0))
    assert P.ternary_levels(w, delta).tolist() == [[0, -1, 1, 0], [1, 1, 0, 0]]


def test_binary_weights_and_activations():
    w = t(0.5, -1.5, 0.0)
    assert P.binary_levels(w).tolist() == [1, -1, 1]  # sign(0) = +1
    assert P.binary_scale(w, per_channel=False).item() == pytest.approx(2 / 3)
    x = t(0.3, -2.0, 0.0, -0.5).requires_grad_(True)
    y = P.binarize_act(x)
    assert y.tolist() == [1, -1, 1, -1]
    y.sum().backward()
    assert x.grad.tolist() == [1, 0, 1, 1]  # hard-tanh: no gradient where |x| > 1


def test_ste_levels_identity_gradient():
    w = t(0.3, -0.8).requires_grad_(True)
    y = P.ste_levels(w, t(1.0, -1.0), torch.tensor(0.5))
    assert y.tolist() == [0.5, -0.5]
    (y * t(2.0, 3.0)).sum().backward()
    assert w.grad.tolist() == [2.0, 3.0]


def test_relax():
    # (eta * Q + W) / (1 + eta) = (3 * 0.5 + 1) / 4
    assert P.relax(t(1.0), t(0.5), 3.0).item() == pytest.approx(0.625)
    assert P.relax(t(1.0), t(0.5), 1e9).item() == pytest.approx(0.5)


def test_gram_penalty_hand_cases():
    # W^T W = diag(1, 4) -> (1-1)^2 + (4-1)^2
    assert P.gram_penalty(t(1.0, 0.0, 0.0, 2.0).reshape(2, 2)).item() == pytest.approx(9.0)
    # wide W = [1 1]: W^T W - I = [[0, 1], [1, 0]] -> 2
    assert P.gram_penalty(t(1.0, 1.0).reshape(1, 2)).item() == pytest.approx(2.0)
    # the same weight as a conv kernel [out=1, in=1, 1, 2]
    assert P.gram_penalty(t(1.0, 1.0).reshape(1, 1, 1, 2)).item() == pytest.approx(2.0)
    # tall W = [1; 1]: W^T W = [2] -> 1
    assert P.gram_penalty(t(1.0, 1.0).reshape(2, 1)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (4, 2, 3, 3)])
def test_gram_penalty_equals_the_stated_formula_and_its_gradient(shape):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    m = w.reshape(shape[0], -1)
    direct = ((m.T @ m - torch.eye(m.shape[1], dtype=torch.float64)) ** 2).sum()
    (g_direct,) = torch.autograd.grad(direct, w)
    fast = P.gram_penalty(w)
    (g_fast,) = torch.autograd.grad(fast, w)
    assert fast.item() == pytest.approx(direct.item(), rel=1e-10)
    assert torch.allclose(g_fast, g_direct, atol=1e-10)


def test_group_lasso_and_channel_norms():
    w = t(3.0, 4.0, 0.0, 0.0).reshape(2, 2)
    assert P.channel_norms(w).tolist() == [5.0, 0.0]
    assert P.group_lasso(w).item() == pytest.approx(5 * math.sqrt(2))
