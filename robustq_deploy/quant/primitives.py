"""Quantization math as pure functions.

Everything that quantizes (the QAT modules, the ONNX exporters, the TVM converters' reference
checks, the tests) calls these functions, so there is one definition of each scheme:

* affine / symmetric quantize and dequantize, per tensor or per channel (axis 0),
  ``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)``, ``x' = (q - zero_point) * scale``
  (the rounding ONNX QuantizeLinear and ``torch.round`` use);
* straight-through estimators: :func:`round_ste` passes the gradient of rounding unchanged,
  :func:`fake_quantize` passes it inside the clipping range and blocks it outside;
* learned step size (LSQ, Esser et al. 2020) with its gradient scale ``1/sqrt(numel * qmax)``;
* ternary weights: threshold ``delta = 0.7 * mean|W|``, scale = mean of the surviving ``|W|``
  (Li et al. 2016, Ternary Weight Networks);
* binary weights: ``sign(W) * mean|W|`` (Rastegari et al. 2016, XNOR-Net), with ``sign(0) = +1``;
* binary activations: ``sign(x)`` with the hard-tanh straight-through gradient;
* clipped symmetric scales ``c * max|W| / qmax`` (layer-wise quantization picks ``c``);
* the regularizers and relaxations of the robust training methods: orthogonality
  ``||W^T W - I||_F^2`` (Defensive Quantization), channel group lasso and channel sparsity, and the
  BinaryRelax relaxation ``(eta * Q(W) + W) / (1 + eta)``.

Scales are float32 tensors; per-channel scales have shape ``[C]`` and broadcast along axis 0.
"""
from __future__ import annotations

import math

import torch

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_TINY = 1e-8  # scale floor so an all-zero channel does not divide by zero


def qrange(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-wide type; ``narrow`` drops the most negative value (-127..127)."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def channel_view(t: torch.Tensor, ndim: int, axis: int = 0) -> torch.Tensor:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of an ``ndim`` tensor."""
    if t.ndim == 0:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass."""
    return (torch.round(x) - x).detach() + x


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """Integer levels (as a float tensor) of ``x``; no gradient semantics."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int = 0) -> torch.Tensor:
    return (q - zero_point) * scale


class _FakeQuantize(torch.autograd.Function):
    """Quantize-dequantize forward, clipped straight-through backward, in one autograd node.

    One node instead of a dozen elementwise ones: QAT of small networks is bound by per-op
    overheads, and every training step (and every attack step) runs this on each layer's input,
    weight and bias. The forward value is ``dequantize(quantize(x))`` exactly."""

    generate_vmap_rule = True  # torch.func transforms (jacrev in the diagnostics tests) work through it

    @staticmethod
    def forward(x, scale, zero_point, qmin, qmax):
        v = x / scale + zero_point
        q = torch.clamp(torch.round(v), qmin, qmax)
        return (q - zero_point) * scale, (v >= qmin) & (v <= qmax)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx, grad, _):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """Quantize-dequantize with a clipped straight-through gradient.

    Forward: ``dequantize(quantize(x))``. Backward w.r.t. ``x``: the incoming gradient where
    ``x`` lies inside the representable range, zero where it was clipped (the standard STE).
    ``scale`` receives no gradient here; use :func:`lsq_fake_quantize` for a learned scale.
    """
    return _FakeQuantize.apply(x, scale.detach(), zero_point, qmin, qmax)[0]


def lsq_fake_quantize(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int, grad_scale: float) -> torch.Tensor:
    """Learned step size quantization (zero point 0): the step gets the LSQ gradient.

    ``d out / d s = -v + round(v)`` inside the range and ``qmin`` / ``qmax`` outside
    (``v = x / s``), multiplied by ``grad_scale`` (``1 / sqrt(numel * qmax)`` in the paper).
    """
    s = (scale - scale.detach()) * grad_scale + scale.detach()  # value s, gradient scaled
    v = torch.clamp(x / s, qmin, qmax)
    return round_ste(v) * s


def lsq_grad_scale(numel: int, qmax: int) -> float:
    return 1.0 / math.sqrt(max(numel, 1) * max(qmax, 1))


def lsq_init_scale(x: torch.Tensor, qmax: int, per_channel: bool = False) -> torch.Tensor:
    """LSQ's initial step ``2 * mean|x| / sqrt(qmax)`` (per channel on axis 0 if asked)."""
    return torch.clamp(2 * _reduce_abs(x, per_channel, "mean") / math.sqrt(qmax), min=_TINY).to(torch.float32)


def _reduce_abs(w: torch.Tensor, per_channel: bool, fn: str) -> torch.Tensor:
    a = w.detach().abs()
    if per_channel:
        a = a.reshape(a.shape[0], -1)
        return a.amax(dim=1) if fn == "max" else a.mean(dim=1)
    return a.max() if fn == "max" else a.mean()


def symmetric_scale(w: torch.Tensor, bits: int, per_channel: bool, clip: float | None = None) -> torch.Tensor:
    """Scale of narrow-range symmetric quantization: ``max|W| / (2**(bits-1) - 1)``.

    ``clip`` (0 < c <= 1) narrows the range to ``c * max|W|``: weights beyond it saturate, the
    rest get a finer step. None keeps the full range."""
    _, qmax = qrange(bits, signed=True, narrow=True)
    peak = _reduce_abs(w, per_channel, "max")
    if clip is not None:
        peak = peak * clip
    return torch.clamp(peak / qmax, min=_TINY).to(torch.float32)


def ternary_params(w: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold ``delta = 0.7 * mean|W|`` and scale ``alpha`` = mean |W| over ``|W| > delta``."""
    a = w.detach().abs()
    delta = 0.7 * _reduce_abs(w, per_channel, "mean")
    d = channel_view(delta, w.ndim)
    mask = (a > d).to(a.dtype)
    if per_channel:
        num = (a * mask).reshape(a.shape[0], -1).sum(1)
        den = mask.reshape(a.shape[0], -1).sum(1)
    else:
        num, den = (a * mask).sum(), mask.sum()
    alpha = torch.clamp(num / torch.clamp(den, min=1.0), min=_TINY)
    return delta.to(torch.float32), alpha.to(torch.float32)


def ternary_levels(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Integer levels in {-1, 0, +1}."""
    d = channel_view(delta, w.ndim)
    return torch.where(w > d, 1.0, torch.where(w < -d, -1.0, 0.0)).to(w.dtype)


def binary_levels(w: torch.Tensor) -> torch.Tensor:
    """Integer levels in {-1, +1}; zero maps to +1 so every weight is one bit."""
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


def binary_scale(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    return torch.clamp(_reduce_abs(w, per_channel, "mean"), min=_TINY).to(torch.float32)


def ste_levels(w: torch.Tensor, levels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``levels * scale`` in the forward pass, identity gradient to ``w`` (straight-through)."""
    out = levels * channel_view(scale, w.ndim)
    return w + (out - w).detach()


def binarize_act(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` (zero to +1) forward, hard-tanh gradient (pass where ``|x| <= 1``) backward."""
    out = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    inside = x.abs() <= 1
    return torch.where(inside, x + (out - x).detach(), out.detach())


def relax(w: torch.Tensor, wq: torch.Tensor, eta: float) -> torch.Tensor:
    """BinaryRelax (Yin et al. 2018): ``(eta * Q(W) + W) / (1 + eta)``, the minimizer of
    ``||X - W||^2 + eta * ||X - Q(W)||^2``; eta -> inf gives the hard quantization ``Q(W)``."""
    return (eta * wq + w) / (1 + eta)


def gram_penalty(w: torch.Tensor) -> torch.Tensor:
    """``||W^T W - I||_F^2`` of a weight reshaped to ``[out, in * k * k]`` (Defensive Quantization).

    Computed through the smaller Gram matrix: ``||W^T W - I_n||^2 = ||W W^T - I_m||^2 + (n - m)``
    (both are ``sum(s^4) - 2 sum(s^2)`` plus the identity's size, s the singular values), so the
    value and the gradient are exactly those of the stated formula at the cost of the cheap side.
    """
    m = w.reshape(w.shape[0], -1)
    rows, cols = m.shape
    if rows > cols:  # W^T W is the small side already
        return ((m.T @ m - torch.eye(cols, dtype=m.dtype, device=m.device)) ** 2).sum()
    eye = torch.eye(rows, dtype=m.dtype, device=m.device)
    return ((m @ m.T - eye) ** 2).sum() + (cols - rows)


def channel_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output channel (axis 0) of a weight."""
    return w.reshape(w.shape[0], -1).norm(dim=1)


def group_lasso(w: torch.Tensor) -> torch.Tensor:
    """Channel group lasso ``sum_c sqrt(n_c) * ||W_c||_2`` over output channels (n_c weights each)."""
    n = w[0].numel()
    return math.sqrt(n) * channel_norms(w).sum()
