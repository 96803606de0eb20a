"""MatMulInteger, QLinearMatMul and com.microsoft QGemm: matrix products accumulating in int32.

:func:`matmul_accumulate` is the shared integer product (zero points subtracted in a wider type
when not all zero; raw int8/uint8 operands otherwise). QLinearMatMul and QGemm rescale like
onnxruntime: multiplier ``a_scale * b_scale / y_scale`` (QGemm: ``alpha * a_scale * b_scale
[/ y_scale]``) in float32, ``nearbyint(float32(acc) * multiplier) + y_zp``; a QGemm without
``y_scale`` returns ``float32(acc) * multiplier``.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto
from tvm import relax

from .. import arith
from ..dtypes import type_name
from ..implementations import OpCall, lower, register_implementation
from ..registry import Converter, ConverterContext, const_value, dtype_of, register_converter, shape_of
from .conv import output_qtype

_EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)


def _per_row(bb, zp, a_shape: list):
    """A 1-D per-row parameter of ``a`` ([M]) as [M, 1]; anything else broadcasts as is."""
    if zp is None:
        return None
    shape = shape_of(zp)
    if len(shape) == 1 and shape[0] != 1 and len(a_shape) >= 2:
        value = const_value(zp)
        if value is not None:
            return arith.const(value.reshape(-1, 1))
        return bb.emit(relax.op.reshape(zp, [shape[0], 1]))
    return zp


def matmul_accumulate(ctx: ConverterContext, a, b, a_zp=None, b_zp=None, trans_a: bool = False, trans_b: bool = False):
    """``(a - a_zp) @ (b - b_zp)`` in int32; ``a_zp`` per tensor or per row, ``b_zp`` per column.

    Lowered through the kernel hook (op kind ``int_matmul``: operands ``a`` [.., M, K], ``b``
    [K, N] or batched, zero points; see :mod:`..kernels`); generic: :func:`generic_int_matmul`."""
    bb = ctx.bb
    if trans_a:
        a = bb.emit(relax.op.permute_dims(a, [1, 0]))
    if trans_b:  # b is [N, K]: its per-column zero points lie on axis 0
        b = bb.emit(relax.op.permute_dims(b, [1, 0]))
    call = OpCall("int_matmul", bb, getattr(ctx, "target", None),
                      {"a": a, "b": b, "a_zp": _per_row(bb, a_zp, shape_of(a)), "b_zp": b_zp})
    return lower(call)


@register_implementation("int_matmul", "generic", priority=0)
def generic_int_matmul(call: OpCall):
    """Zero points subtracted in a wider type when not all zero, then Relax matmul (int32 out)."""
    bb = call.bb
    a, b, a_zp, b_zp = (call.operands[k] for k in ("a", "b", "a_zp", "b_zp"))
    wide = arith.widen_for(dtype_of(a), dtype_of(b))
    ac = arith.zero_centered(bb, a, a_zp, wide)
    bc = arith.zero_centered(bb, b, b_zp, wide)
    if (ac is a) != (bc is b):
        ac = ac if ac is not a else bb.emit(relax.op.astype(a, wide))
        bc = bc if bc is not b else bb.emit(relax.op.astype(b, wide))
    return bb.emit(relax.op.matmul(ac, bc, out_dtype="int32"))


def _problems(ctx: ConverterContext, indices) -> list[str]:
    out = []
    for i in indices:
        t = ctx.in_type(i)
        if t is not None and t not in _EIGHT_BIT:
            out.append(f"{ctx.where}: input {i} has element type {type_name(t)}; supported: int8, uint8")
    return out


def _scalar(bb, s):
    value = const_value(s)
    if value is not None:
        return np.asarray(value).reshape(())
    return bb.emit(relax.op.reshape(s, [])) if len(shape_of(s)) else s


def matmul_multiplier(ctx: ConverterContext, a_scale, b_scale, y_scale=None, alpha: float = 1.0):
    """``alpha * a_scale * b_scale [/ y_scale]`` in onnxruntime's order, as float32.

    Constant scales are folded in numpy in their own type (float16 scales in float16, as the
    ONNX reference computes them); run-time scales are combined in float32.
    """
    bb = ctx.bb
    a_s, y_s = _scalar(bb, a_scale), (_scalar(bb, y_scale) if y_scale is not None else None)
    b_v = const_value(b_scale)
    if b_v is not None and not isinstance(a_s, relax.Expr) and not isinstance(y_s, relax.Expr):
        m = a_s * np.asarray(b_v)
        if alpha != 1.0:
            m = (np.asarray(alpha, a_s.dtype) * a_s) * np.asarray(b_v)
        if y_s is not None:
            m = m / y_s
        return arith.const(m, np.float32)
    f32 = [arith.const(v, np.float32) if not isinstance(v, relax.Expr) else bb.emit(relax.op.astype(v, "float32"))
           for v in (a_s, y_s) if v is not None]
    a_e, y_e = f32[0], (f32[1] if y_s is not None else None)
    if alpha != 1.0:
        a_e = bb.emit(relax.op.multiply(arith.const(alpha, "float32"), a_e))
    m = bb.emit(relax.op.multiply(a_e, bb.emit(relax.op.astype(b_scale, "float32"))))
    return bb.emit(relax.op.divide(m, y_e)) if y_e is not None else m


@register_converter("MatMulInteger")
class MatMulInteger(Converter):
    @classmethod
    def check(cls, ctx):
        return _problems(ctx, (0, 1))

    @classmethod
    def impl_v10(cls, ctx, inputs):
        return matmul_accumulate(ctx, inputs[0], inputs[1], inputs[2], inputs[3])


@register_converter("QLinearMatMul")
class QLinearMatMul(Converter):
    @classmethod
    def check(cls, ctx):
        return _problems(ctx, (0, 3, 7))

    @classmethod
    def _convert(cls, ctx, inputs):
        a, a_s, a_z, b, b_s, b_z, y_s, y_z = (inputs[i] for i in range(8))
        acc = matmul_accumulate(ctx, a, b, a_z, b_z)
        qt = output_qtype(ctx, 7, 0, y_z, a)
        mult = matmul_multiplier(ctx, a_s, b_s, y_s)
        return arith.requantize_float(ctx.bb, acc, mult, y_z, qt.qmin, qt.qmax, qt.storage)

    @classmethod
    def impl_v10(cls, ctx, inputs):
        return cls._convert(ctx, inputs)

    @classmethod
    def impl_v21(cls, ctx, inputs):  # + float16 / bfloat16 scales
        return cls._convert(ctx, inputs)


@register_converter("QGemm", domain="com.microsoft")
class QGemm(Converter):
    """onnxruntime's quantized Gemm: ``A' @ B' + C`` in int32, then rescale (or float output)."""

    @classmethod
    def check(cls, ctx):
        problems = _problems(ctx, (0, 3))
        if ctx.has_input(7) != ctx.has_input(8):
            problems.append(f"{ctx.where}: y_scale and y_zero_point must be given together")
        return problems

    @classmethod
    def impl_v1(cls, ctx, inputs):
        a, a_s, a_z, b, b_s, b_z, c, y_s, y_z = (inputs[i] for i in range(9))
        acc = matmul_accumulate(ctx, a, b, a_z, b_z, bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0)))
        if c is not None:
            acc = ctx.emit(relax.op.add(acc, arith.as_int32(ctx.bb, c)))
        mult = matmul_multiplier(ctx, a_s, b_s, y_s, float(ctx.attr("alpha", 1.0)))
        if y_s is None:
            return arith.dequantize_acc(ctx.bb, acc, mult)
        qt = output_qtype(ctx, 8, 0, y_z, a)
        return arith.requantize_float(ctx.bb, acc, mult, y_z, qt.qmin, qt.qmax, qt.storage)


__all__ = ["MatMulInteger", "QGemm", "QLinearMatMul", "matmul_accumulate", "matmul_multiplier"]
