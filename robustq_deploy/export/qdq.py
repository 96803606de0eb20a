"""The ``qdq`` export form: QuantizeLinear/DequantizeLinear around float ops.

Each quantized layer gets a Q/DQ pair on its input (the layer's input quantizer), its integer
weight levels as an initializer behind a per-channel DequantizeLinear (axis 0), and its int32 bias
behind a DequantizeLinear with scale ``input_scale * weight_scale``. Runtimes that recognise the
pattern (onnxruntime, and the project's TVM importer) run it as integer code; any other runtime
computes the same values in float.
"""
from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto
from torch import fx, nn

from ..quant import QConv2d, QLinear
from .registry import _FLATTEN, _MAXPOOL, _RELU, ExportContext, register_handler

FMT = "qdq"


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def quantize_input(ctx: ExportContext, x: str, qp: dict, base: str) -> tuple[str, str, str]:
    """Emit QuantizeLinear of float value ``x``; returns (quantized value, scale, zero point)."""
    b = ctx.b
    zdt = np.uint8 if qp["dtype"] == "uint8" else np.int8
    s = b.initializer(f"{base}_x_scale", np.array(qp["scale"], np.float32))
    z = b.initializer(f"{base}_x_zero_point", np.array(qp["zero_point"], zdt))
    (xq,) = b.node("QuantizeLinear", [x, s, z], name=f"{base}_quant_in")
    return xq, s, z


def weight_initializers(ctx: ExportContext, p: dict, base: str) -> tuple[str, str, str, int | None]:
    """Integer weight levels, scale and zero point initializers; axis 0 when per channel."""
    b = ctx.b
    per_channel = p["weight_scale"].ndim == 1
    w = b.initializer(f"{base}_w", p["weight"].astype(np.int8))
    ws = b.initializer(f"{base}_w_scale", p["weight_scale"])
    wz = b.initializer(f"{base}_w_zero_point", np.zeros(p["weight_scale"].shape, np.int8))
    return w, ws, wz, (0 if per_channel else None)


def _qdq_operands(ctx: ExportContext, node: fx.Node, layer) -> tuple[str, str, str | None]:
    """Dequantized input, weight and bias values of a quantized conv/linear layer."""
    b = ctx.b
    base = node.target.replace(".", "_")
    p = layer.integer_params()
    xq, s, z = quantize_input(ctx, ctx.arg(node), p["input"], base)
    (xd,) = b.node("DequantizeLinear", [xq, s, z], name=f"{base}_dequant_in")
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
    base = node.target.replace(".", "_")
    w = ctx.b.initializer(f"{base}_w", layer.weight.detach().numpy().astype(np.float32))
    bias = None
    if layer.bias is not None:
        bias = ctx.b.initializer(f"{base}_b", layer.bias.detach().numpy().astype(np.float32))
    return ctx.arg(node), w, bias


def conv_attrs(layer: nn.Conv2d) -> dict:
    ph, pw = _pair(layer.padding)
    return {"kernel_shape": _pair(layer.kernel_size), "strides": _pair(layer.stride),
            "pads": [ph, pw, ph, pw], "dilations": _pair(layer.dilation), "group": layer.groups}


def _check_layer(gm, node) -> list[str]:
    layer = gm.get_submodule(node.target)
    if layer.w_q.enabled != layer.in_q.enabled:
        return [f"{node.target}: weights and inputs must both be quantized or both float"]
    if layer.in_q.bits == "binary":
        return [f"{node.target}: binary activations need the 'packed' format"]
    if isinstance(layer, QConv2d) and isinstance(layer.padding, str):
        return [f"{node.target}: string padding {layer.padding!r} is not supported"]
    return []


@register_handler(FMT, QConv2d, opsets=(13, 23))
def conv(ctx: ExportContext, node: fx.Node) -> str:
    layer = ctx.module(node)
    xd, wd, bd = (_qdq_operands if layer.quantized else _float_operands)(ctx, node, layer)
    inputs = [xd, wd] + ([bd] if bd else [])
    return ctx.b.node("Conv", inputs, name=node.target.replace(".", "_"), **conv_attrs(layer))[0]


@register_handler(FMT, QLinear, opsets=(13, 23))
def linear(ctx: ExportContext, node: fx.Node) -> str:
    layer = ctx.module(node)
    xd, wd, bd = (_qdq_operands if layer.quantized else _float_operands)(ctx, node, layer)
    inputs = [xd, wd] + ([bd] if bd else [])
    return ctx.b.node("Gemm", inputs, name=node.target.replace(".", "_"), transB=1)[0]


conv.check = linear.check = _check_layer


# ---------------------------------------------------------------- ops shared by the formats


def register_common(fmt: str) -> None:
    """Structural handlers (input, output, relu, pooling, flatten) that every format shares."""
    register_handler(fmt, "placeholder", opsets=(13, 23))(placeholder)
    register_handler(fmt, "output", opsets=(13, 23))(output)
    register_handler(fmt, *_RELU, opsets=(13, 23))(relu)
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


def maxpool(ctx: ExportContext, node: fx.Node) -> str:
    if node.op == "call_module":
        m = ctx.module(node)
        k, s, p = m.kernel_size, m.stride, m.padding
    else:
        k = node.args[1]
        s = node.kwargs.get("stride", node.args[2] if len(node.args) > 2 else k) or k
        p = node.kwargs.get("padding", 0)
    ph, pw = _pair(p)
    return ctx.b.node("MaxPool", [ctx.arg(node)], name=node.name, kernel_shape=_pair(k),
                      strides=_pair(s), pads=[ph, pw, ph, pw])[0]


def _check_maxpool(gm, node) -> list[str]:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if m.ceil_mode or m.dilation not in (1, (1, 1)):
            return [f"{node.target}: MaxPool2d with ceil_mode or dilation is not supported"]
    return []


def flatten(ctx: ExportContext, node: fx.Node) -> str:
    return ctx.b.node("Flatten", [ctx.arg(node)], name=node.name, axis=1)[0]


def _check_flatten(gm, node) -> list[str]:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        start, end = m.start_dim, m.end_dim
    else:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return [] if (start, end) == (1, -1) else [f"{node.name}: flatten({start}, {end}) is not supported (only 1..-1)"]


maxpool.check = _check_maxpool
flatten.check = _check_flatten
register_common(FMT)
