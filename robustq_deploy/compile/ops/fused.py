"""Converters of the integer ops the graph rewrites produce (domain ``ai.robustq.compile``).

These ops exist only between a rewrite and the import; no file ever contains them.

* ``FusedConv`` / ``FusedMatMul`` / ``FusedGemm`` (:mod:`..qdq`): inputs
  ``x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias`` as QLinearConv (``y_scale`` empty:
  float output ``float32(acc) * float32(x_scale * w_scale)``), the float op's attributes, and
  ``requant`` ("fixed-point" / "float"), ``lo`` / ``hi`` (the output clamp: the grid narrowed
  by folded ReLU / Clip), ``w_axis`` (the weight's output axis).
* ``Requantize`` (:mod:`..requant`): the fixed-point chain of the ``integer`` export, attributes
  ``m0``, ``n`` (int64 tensors shaped to broadcast), ``qmin``, ``qmax``, ``to`` (ONNX type).
"""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper
from tvm import relax

from ...fixed_point import multiplier_for
from .. import arith
from ..dtypes import storage_dtype
from ..qdq import FUSED_DOMAIN
from ..registry import Converter, ConverterContext, const_value, register_converter, shape_of
from .conv import add_channel_bias, conv_accumulate, conv_requant, float_multiplier
from .matmul import matmul_accumulate, matmul_multiplier


def _finish(ctx: ConverterContext, acc, xs, ws, ys, yz, channel_axis: int):
    """Float output, or requantization to ``y``'s grid with the ReLU folded into the clamp."""
    ndim = len(shape_of(acc))
    x_s, w_s = const_value(xs), const_value(ws)
    acc_scale = (np.asarray(x_s, np.float32).reshape(()) * np.asarray(w_s, np.float32).reshape(-1)).astype(np.float32)
    acc_b = arith.broadcast_np(acc_scale if acc_scale.size > 1 else acc_scale.reshape(()), ndim, channel_axis)
    if ys is None:
        return arith.dequantize_acc(ctx.bb, acc, arith.const(acc_b))
    qt = ctx.in_qtype(7, yz)
    zp = int(np.asarray(const_value(yz)).reshape(()))
    lo, hi = ctx.attr("lo", qt.qmin), ctx.attr("hi", qt.qmax)
    if ctx.attr("requant") == "float":
        if channel_axis == 1:
            mult = float_multiplier(ctx, xs, ws, ys, ndim, channel_axis)
        else:
            mult = matmul_multiplier(ctx, xs, ws, ys)
        return arith.requantize_float(ctx.bb, acc, mult, yz, lo, hi, qt.storage)
    m0, n = multiplier_for(acc_scale, np.asarray(const_value(ys), np.float32).reshape(()))
    m0_b = arith.broadcast_np(m0 if m0.size > 1 else m0.reshape(()), ndim, channel_axis)
    n_b = arith.broadcast_np(n if n.size > 1 else n.reshape(()), ndim, channel_axis)
    return arith.requantize_fixed(ctx.bb, acc, m0_b, n_b, zp, lo, hi, qt.storage)


@register_converter("FusedConv", domain=FUSED_DOMAIN)
class FusedConv(Converter):
    @classmethod
    def impl_v1(cls, ctx, inputs):
        x, xs, xz, w, ws, wz, ys, yz, b = (inputs[i] for i in range(9))
        if ctx.attr("requant") == "float" and ys is not None:
            qt = ctx.in_qtype(7, yz)
            out = conv_requant(ctx, x, w, xz, wz, xs, ws, ys, yz, b, ctx.attr("lo", qt.qmin), ctx.attr("hi", qt.qmax),
                               qt.storage)
            if out is not None:
                return out
        acc = conv_accumulate(ctx, x, w, xz, wz)
        acc = add_channel_bias(ctx, acc, b, len(shape_of(acc)))
        return _finish(ctx, acc, xs, ws, ys, yz, 1)


class _FusedProduct(Converter):
    trans_b = False

    @classmethod
    def impl_v1(cls, ctx, inputs):
        x, xs, xz, w, ws, wz, ys, yz, b = (inputs[i] for i in range(9))
        trans_b = bool(ctx.attr("transB", 0))
        acc = matmul_accumulate(ctx, x, w, xz, wz, trans_b=trans_b)
        if b is not None:
            acc = ctx.emit(relax.op.add(acc, arith.as_int32(ctx.bb, b)))
        return _finish(ctx, acc, xs, ws, ys, yz, len(shape_of(acc)) - 1)


@register_converter("FusedMatMul", domain=FUSED_DOMAIN)
class FusedMatMul(_FusedProduct):
    """MatMul with a constant [K, N] weight (per-column scales)."""


@register_converter("FusedGemm", domain=FUSED_DOMAIN)
class FusedGemm(_FusedProduct):
    """Gemm (transA = 0, alpha = beta = 1) with an optional int32 bias."""


@register_converter("Requantize", domain=FUSED_DOMAIN)
class Requantize(Converter):
    """The ``integer`` export's fixed-point requantization chain as one fused op."""

    @classmethod
    def impl_v1(cls, ctx, inputs):
        m0 = np.asarray(numpy_helper.to_array(ctx.attr("m0")), np.int64)
        n = np.asarray(numpy_helper.to_array(ctx.attr("n")), np.int64)
        return arith.requantize_fixed(ctx.bb, inputs[0], m0, n, 0, int(ctx.attr("qmin")), int(ctx.attr("qmax")),
                                      storage_dtype(int(ctx.attr("to"))))


__all__ = ["FusedConv", "FusedGemm", "FusedMatMul", "Requantize"]
