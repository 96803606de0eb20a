"""com.microsoft QLinearAdd: the quantized residual add onnxruntime's quantizer emits.

Lowered to onnxruntime's own float formulation (MLAS ``qladd``, the x86 path), so results match
it bit for bit::

    rA = A_scale / C_scale, rB = B_scale / C_scale                        (float32)
    fixed = float(C_zp) - (rA * A_zp + rB * B_zp)
    C = saturate(nearbyint((fixed + float(A) * rA) + float(B) * rB))      (same shapes)
    C = saturate(nearbyint((fixed + float(B) * rB) + float(A) * rA))      (B a single element)

Broadcasting other than equal shapes or a single-element operand is refused: onnxruntime
changes the summation order per broadcast span, which this lowering does not mirror.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto
from tvm import relax

from ...errors import UnsupportedError
from .. import arith
from ..dtypes import type_name
from ..qdq import add_broadcast_mirrored, numel
from ..registry import Converter, ConverterContext, const_value, register_converter, shape_of

_EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)


def const_scalar(ctx: ConverterContext, e, what: str, dtype) -> np.ndarray:
    """A constant scalar (or 1-element) input as a 0-d numpy value; zero when omitted."""
    if e is None:
        return np.zeros((), dtype)
    v = const_value(e)
    if v is None or v.size != 1:
        raise UnsupportedError(f"{ctx.where}: {what} must be a constant scalar")
    return np.asarray(v).reshape(()).astype(dtype)


@register_converter("QLinearAdd", domain="com.microsoft")
class QLinearAdd(Converter):
    @classmethod
    def check(cls, ctx):
        return [f"{ctx.where}: input {i} has element type {type_name(ctx.in_type(i))}; supported: int8, uint8"
                for i in (0, 3) if ctx.in_type(i) is not None and ctx.in_type(i) not in _EIGHT_BIT]

    @classmethod
    def impl_v1(cls, ctx, inputs):
        bb = ctx.bb
        a, b = inputs[0], inputs[3]
        sa, sb, sc = (const_scalar(ctx, inputs[i], name, np.float32)
                      for i, name in ((1, "A_scale"), (4, "B_scale"), (6, "C_scale")))
        za, zb, zc = (const_scalar(ctx, inputs[i], name, np.int32)
                      for i, name in ((2, "A_zero_point"), (5, "B_zero_point"), (7, "C_zero_point")))
        ra, rb = sa / sc, sb / sc
        fixed = np.float32(zc) - (ra * np.float32(za) + rb * np.float32(zb))
        qt = ctx.in_qtype(0, a)
        a_shape, b_shape = shape_of(a), shape_of(b)
        af = bb.emit(relax.op.astype(a, "float32"))
        bf = bb.emit(relax.op.astype(b, "float32"))
        if not add_broadcast_mirrored(a_shape, b_shape):
            raise UnsupportedError(f"{ctx.where}: broadcasting {a_shape} with {b_shape} is not supported "
                                   "(equal shapes or a single-element operand)")
        if 1 in (numel(a_shape), numel(b_shape)):  # onnxruntime's single-element span: that operand first
            (s, rs), (v, rv) = ((bf, rb), (af, ra)) if numel(b_shape) == 1 else ((af, ra), (bf, rb))
            s = bb.emit(relax.op.reshape(s, []))
            t = _fma_free(bb, _fma_free(bb, arith.const(fixed, "float32"), s, rs), v, rv)
        else:
            t = _fma_free(bb, _fma_free(bb, arith.const(fixed, "float32"), af, ra), bf, rb)
        return arith.saturate(bb, arith.round_to_int32(bb, t), qt.qmin, qt.qmax, qt.storage)


def _fma_free(bb, acc, v, ratio):
    """``acc + v * ratio`` in float32 as two roundings (TVM does not contract it into an FMA)."""
    return bb.emit(relax.op.add(acc, bb.emit(relax.op.multiply(v, arith.const(ratio, "float32")))))


__all__ = ["QLinearAdd", "const_scalar"]
