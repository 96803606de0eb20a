"""The twin of the quantization ops, with the reference's arithmetic
(:mod:`robustq_deploy.export.reference.ops_quant`) in the forward pass.

* ``QuantizeLinear``: ``saturate(round_half_even(float32(x) / scale) + zp)``; surrogate
  ``clamp(x / scale + zp)`` (straight-through rounding, clamp-aware saturation).
* ``DequantizeLinear``: ``float32(x - zp) * scale``.
* ``DynamicQuantizeLinear`` (ONNX's definition, as onnxruntime computes it): scale and zero point
  from the tensor's range (one pair for the whole batch); the scale is a constant for the gradient.
* ``ConvInteger`` / ``MatMulInteger`` / ``QLinearConv`` / ``QLinearMatMul`` and the packed
  ``ai.robustq`` ops: the int32 accumulator is computed by a float convolution / product of the
  zero-point-free integers, in float32 when every partial sum stays below 2**24 and in float64
  otherwise (exact either way, the rule of :mod:`robustq_deploy.export.reference.intmath`), so the
  same tensor is exact and differentiable.
* QOperator requantization: onnxruntime's float32 ``scale = float32(x_scale * w_scale) / y_scale``,
  ``saturate(round_half_even(float32(acc) * scale) + y_zp)``; surrogate ``clamp(acc * scale) + y_zp``.
* A fixed-point requantization chain (:class:`~robustq_deploy.export.requant.RequantMatch`):
  ``clamp((acc * m0 + 2**(n-1)) >> n)`` in int64; surrogate ``clamp(acc * m0 * 2**-n)``.
"""
from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto

from ..errors import UnsupportedError
from ..export.requant import RequantMatch
from .ops import TwinOpContext, twin_op
from .ops_standard import conv64
from .values import Val, int_range, int_val, quant_val, ste, wrap

_F32 = torch.float32
_EXACT_F32 = 2 ** 24
_NARROW = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4, TensorProto.INT16,
           TensorProto.UINT16)


def axis_view(v: torch.Tensor, rank: int, axis: int) -> torch.Tensor:
    """A per-axis vector shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if v.numel() == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis % rank] = -1
    return v.reshape(shape)


def _f32(v: Val) -> torch.Tensor:
    return v.t.to(_F32)


@twin_op("QuantizeLinear")
@twin_op("QuantizeLinear", domain="com.microsoft")
def quantize_linear(ctx: TwinOpContext, x: Val, scale: Val, zp: Val | None = None) -> Val:
    if ctx.attr("block_size", 0):
        raise UnsupportedError(f"{ctx.where}: blocked QuantizeLinear")
    out_type = zp.type if zp is not None else (ctx.attr("output_dtype", 0) or TensorProto.UINT8)
    lo, hi = int_range(out_type)
    axis = ctx.attr("axis", 1)
    xt = x.t.to(_F32) if not x.is_int else x.exact.to(_F32)
    s = axis_view(_f32(scale), xt.ndim, axis)
    z = axis_view(zp.exact.to(_F32), xt.ndim, axis) if zp is not None else torch.zeros((), dtype=_F32)
    exact = torch.clamp(torch.round(xt.detach() / s) + z, lo, hi)
    return quant_val(exact, out_type, x.t, 1.0 / s.to(torch.float64), z, lo, hi)


@twin_op("DequantizeLinear")
@twin_op("DequantizeLinear", domain="com.microsoft")
def dequantize_linear(ctx: TwinOpContext, x: Val, scale: Val, zp: Val | None = None) -> Val:
    if ctx.attr("block_size", 0):
        raise UnsupportedError(f"{ctx.where}: blocked DequantizeLinear")
    axis = ctx.attr("axis", 1)
    rank = x.t.ndim
    z = axis_view(zp.exact, rank, axis) if zp is not None else 0
    s = axis_view(_f32(scale), rank, axis)
    if x.type in _NARROW:  # x - zp is a small integer, exact in x.t and in float32: one differentiable path
        return Val((x.t - z).to(_F32) * s, TensorProto.FLOAT)
    exact = wrap(x.exact - z, TensorProto.INT32).to(_F32) * s
    sur = (x.t - z) * s.to(torch.float64) if x.t.requires_grad else None
    return Val(ste(exact, sur, _F32), TensorProto.FLOAT)


@twin_op("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: TwinOpContext, x: Val):
    xt = x.t.detach().to(_F32)
    lo = torch.clamp(xt.min(), max=0.0)
    hi = torch.clamp(xt.max(), min=0.0)
    scale = torch.where(hi == lo, torch.ones((), dtype=_F32), (hi - lo) / torch.tensor(255.0, dtype=_F32))
    zp = torch.round(torch.clamp(torch.tensor(0.0, dtype=_F32) - lo / scale, 0.0, 255.0))
    exact = torch.clamp(torch.round(xt / scale) + zp, 0, 255).to(torch.int64)
    sur = torch.clamp(x.t / scale + zp, 0, 255) if x.t.requires_grad else None
    return [int_val(exact, TensorProto.UINT8, sur), Val(scale, TensorProto.FLOAT),
            int_val(zp.to(torch.int64), TensorProto.UINT8)]


def centered(v: Val, zp: Val | None, axis: int | None = None) -> Val:
    """``v - zp`` (exact and differentiable); ``axis`` places a per-channel zero point."""
    if zp is None:
        return v
    z = zp.exact
    if axis is not None and z.numel() > 1:
        z = axis_view(z, v.t.ndim, axis)
    return Val(v.t - z.to(v.t.dtype), TensorProto.INT32, v.exact - z)


def _bound(a: Val, b: Val, k: int) -> int:
    """A bound on the magnitude of every partial sum of ``k`` products of ``a`` and ``b`` entries."""
    return k * int(a.exact.abs().max()) * int(b.exact.abs().max()) if a.exact.numel() and b.exact.numel() else 0


def accumulate(acc: torch.Tensor, bound: int) -> Val:
    """An exact integer product held in a float tensor, as an int32 value (wrapped only when the
    bound allows overflow)."""
    exact = acc.detach().round().to(torch.int64)
    return Val(acc.to(torch.float64), TensorProto.INT32, exact if bound < 2 ** 31 else wrap(exact, TensorProto.INT32))


def int_conv(ctx: TwinOpContext, x: Val, w: Val) -> Val:
    """Exact, differentiable integer convolution of zero-point-free ``x`` and ``w``."""
    bound = _bound(x, w, int(w.t[0].numel()))
    return accumulate(conv64(ctx, x.t, w.t, _F32 if bound < _EXACT_F32 else torch.float64), bound)


def int_matmul(a: Val, b: Val) -> Val:
    bound = _bound(a, b, a.shape[-1])
    dtype = _F32 if bound < _EXACT_F32 else torch.float64
    return accumulate(a.t.to(dtype) @ b.t.to(dtype), bound)


@twin_op("ConvInteger")
def conv_integer(ctx, x, w, x_zp=None, w_zp=None):
    return int_conv(ctx, centered(x, x_zp), centered(w, w_zp, axis=0))


@twin_op("MatMulInteger")
def matmul_integer(ctx, a, b, a_zp=None, b_zp=None):
    return int_matmul(centered(a, a_zp), centered(b, b_zp, axis=-1))


def qlinear_scale(x_scale: Val, w_scale: Val, y_scale: Val) -> torch.Tensor:
    """onnxruntime's ``float32(float32(x_scale * w_scale) / y_scale)`` (per output channel)."""
    return (_f32(x_scale).reshape(()) * _f32(w_scale).reshape(-1)) / _f32(y_scale).reshape(())


def float_requantize(acc: Val, scale: torch.Tensor, y_zp: Val | None, out_type: int, channel_axis: int) -> Val:
    """``saturate(round_half_even(float32(acc) * scale) + y_zp)`` (onnxruntime's QLinear* rescale)."""
    lo, hi = int_range(out_type)
    zp = int(y_zp.exact.reshape(-1)[0]) if y_zp is not None else 0
    s = axis_view(scale, acc.t.ndim, channel_axis)
    y = acc.exact.to(_F32) * s
    y = torch.clamp(y, float(lo - zp), float(hi - zp))
    exact = torch.round(y).to(torch.int64) + zp
    return quant_val(exact, out_type, acc.t, s.to(torch.float64), zp, lo, hi)


def _scalar(v: Val, what: str, ctx: TwinOpContext) -> Val:
    if v is not None and v.t.numel() != 1:
        raise UnsupportedError(f"{ctx.where}: {what} must be a scalar")
    return v


@twin_op("QLinearConv")
def qlinear_conv(ctx, x, xs, xz, w, ws, wz, ys, yz, b=None):
    acc = int_conv(ctx, centered(x, _scalar(xz, "x_zero_point", ctx)), centered(w, wz, axis=0))
    if b is not None:
        acc = Val(acc.t + b.t.reshape(1, -1, 1, 1), acc.type, wrap(acc.exact + b.exact.reshape(1, -1, 1, 1),
                                                                  TensorProto.INT32))
    return float_requantize(acc, qlinear_scale(xs, ws, ys), yz, yz.type, 1)


@twin_op("QLinearMatMul")
def qlinear_matmul(ctx, a, a_s, az, b, bs, bz, ys, yz):
    acc = int_matmul(centered(a, _scalar(az, "a_zero_point", ctx)), centered(b, bz, axis=-1))
    return float_requantize(acc, qlinear_scale(a_s, bs, ys), yz, yz.type, -1)


def fused_requantize(m: RequantMatch, x: Val) -> Val:
    """A fixed-point requantization chain, exactly :func:`robustq_deploy.fixed_point.requantize`."""
    m0 = torch.from_numpy(np.array(m.m0, np.int64))
    n = torch.from_numpy(np.array(m.n, np.int64))
    exact = torch.clamp((x.exact * m0 + (torch.ones_like(n) << (n - 1))) >> n, m.qmin, m.qmax)
    lo, hi = int_range(m.out_type)
    if not (lo <= m.qmin and m.qmax <= hi):  # a clamp wider than the type: the cast wraps
        exact = wrap(exact, m.out_type)
    mult = m0.to(torch.float64) * torch.pow(2.0, -n.to(torch.float64))
    return quant_val(exact, m.out_type, x.t, mult, 0.0, m.qmin, m.qmax)


__all__ = ["accumulate", "axis_view", "centered", "float_requantize", "fused_requantize", "int_conv", "int_matmul",
           "qlinear_scale"]


