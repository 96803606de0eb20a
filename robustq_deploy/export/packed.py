"""The ``packed`` export form: the ``integer`` graph, with binary and ternary layers as
``ai.robustq`` operators whose weights are packed 8 per byte (:mod:`.robustq_ops`).

Each packed operator outputs the exact int32 accumulator, so everything around it (bias,
requantization, BatchNorm+sign thresholds, output dequantization) is the integer form's. The
model carries the operators' standard-op definitions as model-local functions, so stock
onnxruntime runs it; the domain is imported at version 1. Layers with other weight bit widths
stay ConvInteger / MatMulInteger. Opsets 18-23 (the function bodies use BitwiseAnd).
"""
from __future__ import annotations

from torch import fx, nn

from ..quant import QConv2d, QLinear
from ..registry import registry_of
from .common import conv_attrs
from .lowering import IntValue, check_layer, integer_core, lower_layer, register_structural
from .registry import ExportContext, register_handler
from .robustq_ops import DOMAIN, MIN_OPSET, VERSION, function_proto, op_name, pack_binary, pack_ternary

FMT = "packed"
OPSETS = (MIN_OPSET, 23)
PACKERS = registry_of({"binary": pack_binary, "ternary": pack_ternary}, "packed weight format")


def packed_core(ctx: ExportContext, layer: nn.Module, p: dict, x: str, base: str) -> str:
    kind = p["weight_bits"]
    if kind not in PACKERS:
        return integer_core(layer)(ctx, layer, p, x, base)
    conv = isinstance(layer, QConv2d)
    name = op_name(kind, "conv" if conv else "gemm")
    ctx.b.add_function(function_proto(name, ctx.opset), VERSION)
    wp = ctx.b.initializer(f"{base}_w_packed", PACKERS[kind](p["weight"]))
    attrs = {k: v for k, v in conv_attrs(layer).items() if k in ("kernel_shape", "strides", "pads")} if conv else {}
    return ctx.b.node(name, [x, wp], name=base, domain=DOMAIN, **attrs)[0]


@register_handler(FMT, QConv2d, QLinear, opsets=OPSETS)
def layer(ctx: ExportContext, node: fx.Node) -> IntValue:
    return lower_layer(ctx, node, packed_core)


def _check(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    problems = check_layer(gm, node)
    m = gm.get_submodule(node.target)
    if isinstance(m, QConv2d) and m.w_q.bits in PACKERS and (m.groups != 1 or tuple(m.dilation) != (1, 1)):
        problems.append(f"{node.target}: packed {m.w_q.bits} convolutions support neither groups nor dilation")
    return problems


layer.check = _check
register_structural(FMT, OPSETS)
