"""The ``qdq`` export form: QuantizeLinear/DequantizeLinear around float ops.

Each quantized layer gets a Q/DQ pair on its input (the layer's input quantizer), its integer
weight levels as an initializer behind a per-channel DequantizeLinear (axis 0), and its int32 bias
behind a DequantizeLinear with scale ``input_scale * weight_scale``. Runtimes that recognise the
pattern (onnxruntime, and the project's TVM importer) run it as integer code; any other runtime
computes the same values in float.

Bit widths: 4-bit weights are INT4 initializers from opset 21 on (int8 below); ternary and binary
weights are int8 levels ``{-1, 0, +1}`` with their scale. Activations are stored as uint8/int8;
grids narrower than the storage type (4-bit, narrow signed ``-127..127``) clip the float input
to ``[qmin * scale, qmax * scale]`` before the QuantizeLinear, which saturates only to the type
range. (UINT4/INT4 activation Q/DQ pairs are avoided on purpose: onnxruntime 1.32's QDQ
propagation moves them across MaxPool and then rejects its own graph.) Binary activations
(``sign``) and BatchNorm have no QDQ form: use ``integer`` or ``packed``.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto
from torch import fx, nn

from ..dtypes import int_range
from ..quant import QAdd, QAvgPool2d, QConcat, QConv2d, QLinear
from .common import (base_name, check_avgpool, check_clamp, check_flatten, check_maxpool, clamp_bounds, conv_attrs,
                     maxpool_attrs, pair)
from .registry import _CLAMP, _FLATTEN, _MAXPOOL, _RELU, ExportContext, register_handler

FMT = "qdq"
INT4_OPSET = 21


def quantize_input(ctx: ExportContext, x: str, qp: dict, base: str) -> tuple[str, str, str]:
    """Emit QuantizeLinear of float value ``x``; returns (quantized value, scale, zero point)."""
    b = ctx.b
    s = b.initializer(f"{base}_x_scale", np.array(qp["scale"], np.float32))
    z = b.initializer(f"{base}_x_zero_point", np.array(0, np.dtype(qp["dtype"])))
    if (qp["qmin"], qp["qmax"]) != int_range(qp["dtype"]):
        lo, hi = (np.float32(q) * np.float32(qp["scale"]) for q in (qp["qmin"], qp["qmax"]))
        (x,) = b.node("Clip", [x, b.const(lo, np.float32), b.const(hi, np.float32)], name=f"{base}_clip_in")
    (xq,) = b.node("QuantizeLinear", [x, s, z], name=f"{base}_quant_in")
    return xq, s, z


def quantize_dequantize(ctx: ExportContext, x: str, qp: dict, base: str) -> str:
    xq, s, z = quantize_input(ctx, x, qp, base)
    return ctx.b.node("DequantizeLinear", [xq, s, z], name=f"{base}_dequant_in")[0]


def weight_initializers(ctx: ExportContext, p: dict, base: str) -> tuple[str, str, str, int | None]:
    """Integer weight levels, scale and zero point initializers; axis 0 when per channel.
    4-bit weights are stored as INT4 from opset 21 on."""
    b = ctx.b
    per_channel = p["weight_scale"].ndim == 1
    levels = p["weight"].astype(np.int8)
    zeros = np.zeros(p["weight_scale"].shape, np.int8)
    if p["weight_bits"] == 4 and ctx.opset >= INT4_OPSET:
        levels, zeros = levels.astype(ml_dtypes.int4), zeros.astype(ml_dtypes.int4)
    w = b.initializer(f"{base}_w", levels)
    ws = b.initializer(f"{base}_w_scale", p["weight_scale"])
    wz = b.initializer(f"{base}_w_zero_point", zeros)
    return w, ws, wz, (0 if per_channel else None)


def _qdq_operands(ctx: ExportContext, node: fx.Node, layer) -> tuple[str, str, str | None]:
    """Dequantized input, weight and bias values of a quantized conv/linear layer."""
    b = ctx.b
    base = base_name(node)
    p = layer.integer_params()
    xd = quantize_dequantize(ctx, ctx.arg(node), p["input"], base)
    w, ws, wz, axis = weight_initializers(ctx, p, base)
    extra = {"axis": axis} if axis is not None else {}
    (wd,) = b.node("DequantizeLinear", [w, ws, wz], name=f"{base}_dequant_w", **extra)
    bd = None
    if p["bias"] is not None:
        bq = b.initializer(f"{base}_b", p["bias"])
        bs = b.initializer(f"{base}_b_scale", p["bias_scale"])
        bz = b.initializer(f"{base}_b_zero_point", np.zeros(p["bias_scale"].shape, np.int32))
        (bd,) = b.node("DequantizeLinear", [bq, bs, bz], name=f"{base}_dequant_b", **extra)
    return xd, wd, bd


def _float_operands(ctx: ExportContext, node: fx.Node, layer) -> tuple[str, str, str | None]:
    base = base_name(node)
    weight, b = layer.weight_and_bias()
    w = ctx.b.initializer(f"{base}_w", weight.detach().numpy().astype(np.float32))
    bias = None
    if b is not None:
        bias = ctx.b.initializer(f"{base}_b", b.detach().numpy().astype(np.float32))
    return ctx.arg(node), w, bias


def _check_layer(gm, node) -> list[str]:
    layer = gm.get_submodule(node.target)
    if layer.w_q.enabled != layer.in_q.enabled:
        return [f"{node.target}: weights and inputs must both be quantized or both float"]
    if layer.in_q.bits == "binary":
        return [f"{node.target}: binary activations need the 'integer' or 'packed' format"]
    if isinstance(layer, QConv2d) and isinstance(layer.padding, str):
        return [f"{node.target}: string padding {layer.padding!r} is not supported"]
    return []


@register_handler(FMT, QConv2d, opsets=(13, 23))
def conv(ctx: ExportContext, node: fx.Node) -> str:
    layer = ctx.module(node)
    xd, wd, bd = (_qdq_operands if layer.quantized else _float_operands)(ctx, node, layer)
    inputs = [xd, wd] + ([bd] if bd else [])
    return ctx.b.node("Conv", inputs, name=base_name(node), **conv_attrs(layer))[0]


@register_handler(FMT, QLinear, opsets=(13, 23))
def linear(ctx: ExportContext, node: fx.Node) -> str:
    layer = ctx.module(node)
    xd, wd, bd = (_qdq_operands if layer.quantized else _float_operands)(ctx, node, layer)
    inputs = [xd, wd] + ([bd] if bd else [])
    return ctx.b.node("Gemm", inputs, name=base_name(node), transB=1)[0]


@register_handler(FMT, QAdd, opsets=(13, 23))
def residual_add(ctx: ExportContext, node: fx.Node) -> str:
    """Both inputs quantized onto the add's shared grid, then a float Add."""
    q = ctx.module(node).in_q
    base = base_name(node)
    ins = [ctx.arg(node, i) for i in range(2)]
    if q.enabled:
        ins = [quantize_dequantize(ctx, x, q.qparams(), f"{base}_in{i}") for i, x in enumerate(ins)]
    return ctx.b.node("Add", ins, name=base)[0]


@register_handler(FMT, QConcat, opsets=(13, 23))
def concat(ctx: ExportContext, node: fx.Node) -> str:
    """Every input quantized onto the shared grid, then a Concat."""
    m = ctx.module(node)
    base = base_name(node)
    ins = [ctx.arg(node, i) for i in range(len(node.args))]
    if m.in_q.enabled:
        ins = [quantize_dequantize(ctx, x, m.in_q.qparams(), f"{base}_in{i}") for i, x in enumerate(ins)]
    return ctx.b.node("Concat", ins, name=base, axis=m.dim)[0]


@register_handler(FMT, QAvgPool2d, opsets=(13, 23))
def avgpool(ctx: ExportContext, node: fx.Node) -> str:
    """The input quantized onto its grid, then GlobalAveragePool (Flatten without keepdim) or an
    AveragePool that counts its zero padding."""
    m = ctx.module(node)
    base = base_name(node)
    x = ctx.arg(node)
    if m.in_q.enabled:
        x = quantize_dequantize(ctx, x, m.in_q.qparams(), base)
    if m.is_global:
        (y,) = ctx.b.node("GlobalAveragePool", [x], name=base)
        return y if m.keepdim else ctx.b.node("Flatten", [y], name=f"{base}_flatten", axis=1)[0]
    (kh, kw), (sh, sw), (ph, pw) = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
    return ctx.b.node("AveragePool", [x], name=base, kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw],
                      count_include_pad=1)[0]


@register_handler(FMT, nn.AdaptiveAvgPool2d, opsets=(13, 23))
def global_avgpool(ctx: ExportContext, node: fx.Node) -> str:
    return ctx.b.node("GlobalAveragePool", [ctx.arg(node)], name=base_name(node))[0]


def _check_grid(gm, node) -> list[str]:
    q = gm.get_submodule(node.target).in_q
    return [f"{node.target}: binary activations need the 'integer' or 'packed' format"] if q.bits == "binary" else []


conv.check = linear.check = _check_layer
global_avgpool.check = check_avgpool
concat.check = avgpool.check = _check_grid


# ---------------------------------------------------------------- ops shared by the formats


def register_common(fmt: str) -> None:
    """Structural handlers (input, output, relu, pooling, flatten) of the float-valued forms."""
    register_handler(fmt, "placeholder", opsets=(13, 23))(placeholder)
    register_handler(fmt, "output", opsets=(13, 23))(output)
    register_handler(fmt, *_RELU, opsets=(13, 23))(relu)
    register_handler(fmt, *_CLAMP, opsets=(13, 23))(clamp)
    register_handler(fmt, *_MAXPOOL, opsets=(13, 23))(maxpool)
    register_handler(fmt, *_FLATTEN, opsets=(13, 23))(flatten)


def placeholder(ctx: ExportContext, node: fx.Node) -> str:
    return ctx.b.add_input("input", TensorProto.FLOAT, ["N", *ctx.input_shape])


def output(ctx: ExportContext, node: fx.Node) -> str:
    (src,) = node.args
    ctx.b.node("Identity", [ctx.values[src.name]], ["logits"], name="output")
    ctx.b.add_output("logits", TensorProto.FLOAT, ["N", None])
    return "logits"


def relu(ctx: ExportContext, node: fx.Node) -> str:
    return ctx.b.node("Relu", [ctx.arg(node)], name=node.name)[0]


def clamp(ctx: ExportContext, node: fx.Node) -> str:
    """ReLU6 / hardtanh as a Clip with constant float bounds."""
    lo, hi = clamp_bounds(ctx.gm, node)
    b = ctx.b
    return b.node("Clip", [ctx.arg(node), b.const(lo, np.float32), b.const(hi, np.float32)], name=node.name)[0]


def maxpool(ctx: ExportContext, node: fx.Node) -> str:
    return ctx.b.node("MaxPool", [ctx.arg(node)], name=node.name, **maxpool_attrs(ctx.gm, node))[0]


def flatten(ctx: ExportContext, node: fx.Node) -> str:
    return ctx.b.node("Flatten", [ctx.arg(node)], name=node.name, axis=1)[0]


clamp.check = check_clamp
maxpool.check = check_maxpool
flatten.check = check_flatten
register_common(FMT)
