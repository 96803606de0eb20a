"""The ``integer`` export form: an integer-only graph in standard ONNX operators.

    input (float) -> QuantizeLinear (uint8 pixels)
      -> ConvInteger / MatMulInteger (int32) -> + int32 bias
      -> fixed-point requantization to the next layer's input grid (:mod:`.requant`:
         Cast int64, Mul m0, Add 2**(n-1), exact floor shift by Mod/Sub/Div, Clip, Cast 8-bit)
         or, for a binary next layer, BatchNorm+sign thresholds (GreaterOrEqual/LessOrEqual/Where)
      -> MaxPool / Flatten on the 8-bit tensor -> next layer ...
      -> last int32 accumulator -> DequantizeLinear(int32, per-channel scale) -> float logits

No float op lies between the input QuantizeLinear and the output DequantizeLinear. Weights are
int8 levels (binary and ternary too); 4-bit weights are stored as INT4 and Cast to int8 at
opset >= 21. Opsets 14-23 (int32 ReLU needs 14). The lowering itself lives in :mod:`.lowering`.
"""
from __future__ import annotations

from torch import fx

from ..quant import QConv2d, QLinear
from .lowering import IntValue, check_layer, integer_core, lower_layer, register_structural
from .registry import ExportContext, register_handler

FMT = "integer"
OPSETS = (14, 23)


@register_handler(FMT, QConv2d, QLinear, opsets=OPSETS)
def layer(ctx: ExportContext, node: fx.Node) -> IntValue:
    return lower_layer(ctx, node, integer_core(ctx.module(node)))


layer.check = check_layer
register_structural(FMT, OPSETS)
