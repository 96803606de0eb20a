"""QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear (ai.onnx, and the com.microsoft
twins onnxruntime emits for int4 below opset 21).

Per-tensor, per-axis and blocked quantization; every integer grid in :mod:`..dtypes`.
Semantics are the ONNX reference's (``onnx.reference.ops.op_quantize_linear``): ``x / scale`` in
float32 (the ``precision`` attribute of opset 23 may ask for float16), round half to even,
integer zero point add, saturation to the logical grid.
"""
from __future__ import annotations

from onnx import TensorProto
from tvm import relax

from .. import arith
from ..dtypes import QTYPES, QUANT_TYPES, REFUSED, qtype, storage_dtype, type_name
from ..registry import Converter, ConverterContext, register_converter, shape_of

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _qtype_problem(ctx: ConverterContext, t: int | None, allowed) -> list[str]:
    if t is None or t in allowed:
        return []
    if t in REFUSED:
        return [f"{ctx.where}: {type_name(t)}: {REFUSED[t]}"]
    return [f"{ctx.where}: element type {type_name(t)} is not supported"]


def _axis(ctx: ConverterContext, ndim: int) -> int:
    axis = ctx.attr("axis", 1)
    return axis + ndim if axis < 0 else axis


def _qparams(ctx: ConverterContext, data, scale, zp, block_size: int):
    """Scale and zero point broadcast against ``data`` (per tensor / per axis / blocked)."""
    shape = shape_of(data)
    ndim = len(shape)
    if ndim <= 1 and ctx.attr("axis", 1) == 1 and len(shape_of(scale)) == 1 and not block_size:
        axis = 0  # a 1-D tensor has no axis 1; the spec's default then means its only axis
    else:
        axis = _axis(ctx, ndim)
    dim = shape[axis] if block_size and axis < ndim else None
    s = arith.broadcast_qparam(ctx.bb, scale, ndim, axis, block_size, dim)
    z = arith.broadcast_qparam(ctx.bb, zp, ndim, axis, block_size, dim) if zp is not None else None
    return s, z


def quantize_output_type(ctx: ConverterContext) -> int:
    """The output grid: the zero point's type, else ``output_dtype``, else uint8 (the spec)."""
    if ctx.has_input(2) and ctx.in_type(2) is not None:
        return ctx.in_type(2)
    return ctx.attr("output_dtype", 0) or TensorProto.UINT8


class _Quantize(Converter):
    @classmethod
    def check(cls, ctx: ConverterContext) -> list[str]:
        problems = _qtype_problem(ctx, quantize_output_type(ctx), QUANT_TYPES)
        if ctx.in_type(0) is not None and ctx.in_type(0) not in _FLOATS:
            problems.append(f"{ctx.where}: input type {type_name(ctx.in_type(0))} is not a float type")
        return problems

    @classmethod
    def _convert(cls, ctx: ConverterContext, inputs, block_size: int = 0):
        x, scale, zp = inputs[0], inputs[1], inputs[2]
        qt = qtype(quantize_output_type(ctx))
        s, z = _qparams(ctx, x, scale, zp, block_size)
        precision = ctx.attr("precision", 0) or (ctx.in_type(1) or TensorProto.FLOAT)
        if precision == TensorProto.FLOAT:
            return arith.quantize(ctx.bb, x, s, z, qt)
        # Division in float16/bfloat16: the float32 quotient rounded to that type is the
        # correctly rounded narrow quotient (float32 has more than twice the bits).
        narrow = storage_dtype(precision)
        xf = ctx.emit(relax.op.astype(x, "float32"))
        sf = ctx.emit(relax.op.astype(s, "float32"))
        q = ctx.emit(relax.op.astype(ctx.emit(relax.op.astype(ctx.emit(relax.op.divide(xf, sf)), narrow)), "float32"))
        return arith.quantize(ctx.bb, q, arith.const(1.0, "float32"), z, qt)


@register_converter("QuantizeLinear")
class QuantizeLinear(_Quantize):
    @classmethod
    def impl_v10(cls, ctx, inputs):  # per tensor only
        return cls._convert(ctx, inputs)

    @classmethod
    def impl_v13(cls, ctx, inputs):  # + axis (per axis)
        return cls._convert(ctx, inputs)

    @classmethod
    def impl_v21(cls, ctx, inputs):  # + block_size, output_dtype, int4/uint4
        return cls._convert(ctx, inputs, ctx.attr("block_size", 0))

    @classmethod
    def impl_v23(cls, ctx, inputs):  # + precision
        return cls._convert(ctx, inputs, ctx.attr("block_size", 0))


@register_converter("QuantizeLinear", domain="com.microsoft")
class MsQuantizeLinear(_Quantize):
    @classmethod
    def impl_v1(cls, ctx, inputs):
        return cls._convert(ctx, inputs)


class _Dequantize(Converter):
    @classmethod
    def check(cls, ctx: ConverterContext) -> list[str]:
        return _qtype_problem(ctx, ctx.in_type(0), tuple(QTYPES))

    @classmethod
    def _convert(cls, ctx: ConverterContext, inputs, block_size: int = 0):
        x, scale, zp = inputs[0], inputs[1], inputs[2]
        s, z = _qparams(ctx, x, scale, zp, block_size)
        out = ctx.attr("output_dtype", 0) or ctx.in_type(1) or TensorProto.FLOAT
        return arith.dequantize(ctx.bb, x, s, z, storage_dtype(out))


@register_converter("DequantizeLinear")
class DequantizeLinear(_Dequantize):
    @classmethod
    def impl_v10(cls, ctx, inputs):
        return cls._convert(ctx, inputs)

    @classmethod
    def impl_v13(cls, ctx, inputs):
        return cls._convert(ctx, inputs)

    @classmethod
    def impl_v21(cls, ctx, inputs):
        return cls._convert(ctx, inputs, ctx.attr("block_size", 0))


@register_converter("DequantizeLinear", domain="com.microsoft")
class MsDequantizeLinear(_Dequantize):
    @classmethod
    def impl_v1(cls, ctx, inputs):
        return cls._convert(ctx, inputs)


@register_converter("DynamicQuantizeLinear")
class DynamicQuantizeLinear(Converter):
    """uint8 quantization with a scale and zero point computed from the input's range.

    As onnxruntime's CPU kernel (the ONNX definition): the range is widened to include 0;
    ``scale = (max - min) / 255`` in float32 (``1.0`` for an all-zero input, where ONNX leaves
    it undefined); ``zero_point = rint(clip(0 - min / scale, 0, 255))``; then QuantizeLinear.
    """

    @classmethod
    def check(cls, ctx: ConverterContext) -> list[str]:
        t = ctx.in_type(0)
        return [] if t in (None, TensorProto.FLOAT) else [f"{ctx.where}: input must be float32, got {type_name(t)}"]

    @classmethod
    def impl_v11(cls, ctx, inputs):
        bb, x = ctx.bb, inputs[0]
        zero = arith.const(0.0, "float32")
        lo = bb.emit(relax.op.minimum(bb.emit(relax.op.min(x)), zero))
        hi = bb.emit(relax.op.maximum(bb.emit(relax.op.max(x)), zero))
        span = bb.emit(relax.op.divide(bb.emit(relax.op.subtract(hi, lo)), arith.const(255.0, "float32")))
        scale = bb.emit(relax.op.where(relax.op.equal(hi, lo), arith.const(1.0, "float32"), span))
        zp_f = bb.emit(relax.op.subtract(zero, bb.emit(relax.op.divide(lo, scale))))
        zp_f = bb.emit(relax.op.clip(zp_f, 0.0, 255.0))
        zp = bb.emit(relax.op.astype(bb.emit(relax.op.round(zp_f)), "uint8"))
        y = arith.quantize(bb, x, scale, zp, qtype(TensorProto.UINT8))
        return relax.Tuple([y, scale, zp])


__all__ = ["DequantizeLinear", "DynamicQuantizeLinear", "QuantizeLinear", "quantize_output_type"]
