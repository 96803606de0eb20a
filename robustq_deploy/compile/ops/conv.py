"""ConvInteger and QLinearConv: 1-D/2-D convolution accumulating in int32.

:func:`conv_accumulate` is the one integer convolution every converter (and the QDQ rewrite's
fused ops) lowers to: zero points are subtracted in a wider integer type when they are not all
zero (so padding contributes the zero point, as the spec requires); otherwise the raw
int8/uint8 tensors go straight into ``conv2d(out_dtype="int32")``, the form integer
dot-product schedules can use. QLinearConv then rescales with onnxruntime's float rescale
(:func:`..arith.requantize_float`).
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto
from tvm import relax

from .. import arith
from ..dtypes import type_name
from ..implementations import OpCall, lower, register_implementation
from ..registry import Converter, ConverterContext, const_value, dtype_of, register_converter, shape_of

_EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)


def conv_geometry(ctx: ConverterContext, x_shape: list, w_shape: list) -> dict:
    """strides / padding / dilation / groups of an ONNX conv node for Relax (1-D or 2-D)."""
    rank = len(w_shape) - 2
    strides = list(ctx.attr("strides", [1] * rank))
    dilations = list(ctx.attr("dilations", [1] * rank))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * (2 * rank)))
    elif auto_pad == "VALID":
        pads = [0] * (2 * rank)
    else:  # SAME_UPPER / SAME_LOWER: output extent ceil(in / stride)
        begin, end = [], []
        for i in range(rank):
            size = x_shape[2 + i]
            out = math.ceil(size / strides[i])
            total = max(0, (out - 1) * strides[i] + (w_shape[2 + i] - 1) * dilations[i] + 1 - size)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        pads = begin + end
    return {"strides": strides, "padding": pads, "dilation": dilations, "groups": ctx.attr("group", 1)}


def conv_problems(ctx: ConverterContext, x_index: int, w_index: int, types=_EIGHT_BIT) -> list[str]:
    problems = []
    for i in (x_index, w_index):
        t = ctx.in_type(i)
        if t is not None and t not in types:
            problems.append(f"{ctx.where}: input {i} has element type {type_name(t)}; supported: "
                            + ", ".join(type_name(u) for u in types))
    ks = ctx.attr("kernel_shape")
    if ks is not None and len(ks) not in (1, 2):
        problems.append(f"{ctx.where}: {len(ks)}-D convolution is not supported (1-D and 2-D are)")
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        problems.append(f"{ctx.where}: auto_pad {auto_pad!r} is not supported")
    return problems


def conv_accumulate(ctx: ConverterContext, x, w, x_zp=None, w_zp=None, geometry: dict | None = None):
    """``sum((x - x_zp) * (w - w_zp))`` over each window, as int32 (NCHW / OIHW, 1-D or 2-D).

    Lowered through the kernel hook (op kind ``int_conv2d``, see :mod:`..kernels`); the generic
    implementation is :func:`generic_int_conv`."""
    w_shape = shape_of(w)
    if len(w_shape) - 2 not in (1, 2):
        raise ValueError(f"{ctx.where}: {len(w_shape) - 2}-D convolution")
    geometry = geometry or conv_geometry(ctx, shape_of(x), w_shape)
    call = OpCall("int_conv2d", ctx.bb, getattr(ctx, "target", None),
                      {"x": x, "w": w, "x_zp": x_zp, "w_zp": w_zp}, dict(geometry))
    return lower(call)


@register_implementation("int_conv2d", "generic", priority=0)
def generic_int_conv(call: OpCall):
    """Zero points subtracted in a wider type when not all zero, then Relax conv (int32 out)."""
    bb, g = call.bb, call.attrs
    x, w, x_zp, w_zp = (call.operands[k] for k in ("x", "w", "x_zp", "w_zp"))
    rank = len(shape_of(w)) - 2
    wide = arith.widen_for(dtype_of(x), dtype_of(w))
    if w_zp is not None:
        w_zp = arith.broadcast_qparam(bb, w_zp, rank + 2, 0)
    xc = arith.zero_centered(bb, x, x_zp, wide)
    wc = arith.zero_centered(bb, w, w_zp, wide)
    if (xc is x) != (wc is w):  # one operand was widened: give the other the same dtype
        xc = xc if xc is not x else bb.emit(relax.op.astype(x, wide))
        wc = wc if wc is not w else bb.emit(relax.op.astype(w, wide))
    conv = relax.op.nn.conv2d if rank == 2 else relax.op.nn.conv1d
    return bb.emit(conv(xc, wc, strides=g["strides"], padding=g["padding"], dilation=g["dilation"],
                        groups=g["groups"], out_dtype="int32"))


def add_channel_bias(ctx: ConverterContext, acc, bias, ndim: int):
    """``acc + bias`` with an int32 per-output-channel bias (axis 1)."""
    if bias is None:
        return acc
    b = arith.broadcast_qparam(ctx.bb, bias, ndim, 1)
    return ctx.emit(relax.op.add(acc, arith.as_int32(ctx.bb, b)))


def float_multiplier_np(x_scale, w_scale, y_scale) -> np.ndarray:
    """``x_scale * w_scale / y_scale`` of constant scales in float32, in onnxruntime's order:
    one value per weight scale (per tensor or per output channel)."""
    xs, ws, ys = (np.asarray(v, np.float32) for v in (x_scale, w_scale, y_scale))
    return ((xs.reshape(()) * ws.reshape(-1)) / ys.reshape(())).astype(np.float32)


def float_multiplier(ctx: ConverterContext, x_scale, w_scale, y_scale, ndim: int, channel_axis: int):
    """``x_scale * w_scale / y_scale`` in float32, in onnxruntime's order, broadcast per channel."""
    values = [const_value(s) for s in (x_scale, w_scale, y_scale)]
    if all(v is not None for v in values):
        return arith.const(arith.broadcast_np(float_multiplier_np(*values), ndim, channel_axis))
    bb = ctx.bb
    xs, ys = (bb.emit(relax.op.reshape(s, [])) if len(shape_of(s)) else s for s in (x_scale, y_scale))
    ws = arith.broadcast_qparam(bb, w_scale, ndim, channel_axis)
    return bb.emit(relax.op.divide(bb.emit(relax.op.multiply(xs, ws)), ys))


def output_qtype(ctx: ConverterContext, zp_index: int, fallback_index: int, expr_zp=None, expr_fallback=None):
    """Grid of the output: the output zero point's type, else the input's (as the reference)."""
    if ctx.has_input(zp_index):
        return ctx.in_qtype(zp_index, expr_zp)
    return ctx.in_qtype(fallback_index, expr_fallback)


@register_converter("ConvInteger")
class ConvInteger(Converter):
    @classmethod
    def check(cls, ctx):
        return conv_problems(ctx, 0, 1)

    @classmethod
    def impl_v10(cls, ctx, inputs):
        return conv_accumulate(ctx, inputs[0], inputs[1], inputs[2], inputs[3])


def conv_requant(ctx: ConverterContext, x, w, xz, wz, xs, ws, ys, yz, b, lo: int, hi: int, storage: str):
    """Convolution, int32 bias and onnxruntime's float rescale onto ``[lo, hi]`` as one op of the
    kernel hook (``int_conv2d_requant``: a kernel library fuses the rescale into its epilogue),
    or None when the scales, zero point or bias are not constants (the caller lowers the pieces)."""
    w_shape = shape_of(w)
    values = [const_value(v) for v in (xs, ws, ys)]
    zp = const_value(yz) if yz is not None else np.zeros((), np.int32)
    oc = w_shape[0]
    bias = const_value(b) if b is not None else np.zeros(oc, np.int32)
    if (len(w_shape) != 4 or not isinstance(oc, int) or any(v is None for v in values) or zp is None
            or bias is None or np.asarray(zp).size != 1):
        return None
    mult = np.broadcast_to(float_multiplier_np(*values), (oc,))
    requant = {"multiplier": np.ascontiguousarray(mult), "zero_point": int(np.asarray(zp).reshape(())),
               "lo": int(lo), "hi": int(hi), "dtype": storage,
               "bias": np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (oc,)).astype(np.int32)}
    geometry = conv_geometry(ctx, shape_of(x), w_shape)
    return lower(OpCall("int_conv2d_requant", ctx.bb, getattr(ctx, "target", None),
                        {"x": x, "w": w, "x_zp": xz, "w_zp": wz}, {**geometry, "requant": requant}))


@register_implementation("int_conv2d_requant", "generic", priority=0)
def generic_conv_requant(call: OpCall):
    """The accumulator (``int_conv2d``), the int32 bias, then :func:`..arith.requantize_float`."""
    bb, r = call.bb, call.attrs["requant"]
    geometry = {k: call.attrs[k] for k in ("strides", "padding", "dilation", "groups")}
    acc = lower(OpCall("int_conv2d", bb, call.target, dict(call.operands), geometry))
    channel = (1, -1, *([1] * (len(shape_of(acc)) - 2)))
    acc = bb.emit(relax.op.add(acc, arith.const(r["bias"].reshape(channel))))
    mult = arith.const(r["multiplier"].reshape(channel))
    return arith.requantize_float(bb, acc, mult, arith.const(np.int32(r["zero_point"])), r["lo"], r["hi"], r["dtype"])


@register_converter("QLinearConv")
class QLinearConv(Converter):
    """``saturate(nearbyint(float32(conv_int32 + B) * (x_scale * w_scale / y_scale)) + y_zp)``."""

    @classmethod
    def check(cls, ctx):
        problems = conv_problems(ctx, 0, 3)
        if ctx.in_type(7) is not None and ctx.in_type(7) not in _EIGHT_BIT:
            problems.append(f"{ctx.where}: output type {type_name(ctx.in_type(7))} is not int8/uint8")
        return problems

    @classmethod
    def impl_v10(cls, ctx, inputs):
        x, xs, xz, w, ws, wz, ys, yz, b = (inputs[i] for i in range(9))
        qt = output_qtype(ctx, 7, 0, yz, x)
        out = conv_requant(ctx, x, w, xz, wz, xs, ws, ys, yz, b, qt.qmin, qt.qmax, qt.storage)
        if out is not None:
            return out
        acc = conv_accumulate(ctx, x, w, xz, wz)
        ndim = len(shape_of(acc))
        acc = add_channel_bias(ctx, acc, b, ndim)
        mult = float_multiplier(ctx, xs, ws, ys, ndim, 1)
        return arith.requantize_float(ctx.bb, acc, mult, yz, qt.qmin, qt.qmax, qt.storage)


__all__ = ["ConvInteger", "QLinearConv", "add_channel_bias", "conv_accumulate", "conv_geometry",
           "conv_problems", "conv_requant", "float_multiplier", "output_qtype"]
