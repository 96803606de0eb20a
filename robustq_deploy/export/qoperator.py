"""The ``qoperator`` export form: QLinearConv / QLinearMatMul where they fit, else ``integer``.

ONNX's QOperator ops requantize inside the producer, in float: onnxruntime computes
``round_half_even(float32(acc) * float32(float32(x_scale * w_scale) / y_scale))`` (modelled
exactly by the numpy reference), unlike the fixed-point chain of the ``integer`` form. A layer
is therefore emitted only when its consumer is known (a lazy producer, see :mod:`.lowering`):

* consumer is a quantized layer whose input grid has the storage type of this layer's input
  (onnxruntime's kernels require ``x``, ``y`` of one type): ``QLinearConv`` with ``y_scale`` =
  the consumer's scale; a ReLU is the uint8 saturation at 0; narrower grids (4-bit, narrow
  int8) and clamps (ReLU6, hardtanh, ReLU on int8) get an integer ``Clip``. Linear layers without bias become ``QLinearMatMul``
  (per-column ``b_scale``); with bias, a 1x1 ``QLinearConv`` between two Reshapes (QLinearMatMul
  has no bias input, and adding the bias after requantization would change the numbers).
* anything else (a binary/BatchNorm consumer, a residual add of another type, the output):
  ConvInteger / MatMulInteger and the integer form's fixed-point requantization.

Both paths are integer-only between the input quantizer and the output dequantizer; the
QLinear ops' internal requantization is float arithmetic inside an integer operator, as ONNX
defines it. Opsets 14-23.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import fx, nn

from ..dtypes import int_range
from ..quant import QConv2d, QLinear
from .common import clamp_levels, conv_attrs
from .lowering import (Grid, IntValue, add_bias, check_layer, integer_core, layer_input, layer_rank,
                       register_structural, weight_initializer)
from .registry import ExportContext, register_handler

FMT = "qoperator"
OPSETS = (14, 23)


@dataclass(eq=False)
class QLinearProducer:
    layer: nn.Module
    p: dict
    x: str  # the layer's quantized input
    x_grid: Grid
    base: str

    def emit_acc(self, ctx: ExportContext) -> str:
        acc = integer_core(self.layer)(ctx, self.layer, self.p, self.x, self.base)
        return add_bias(ctx, acc, self.p, layer_rank(self.layer), self.base)

    def emit_quantized(self, ctx: ExportContext, grid: Grid, clamp: tuple[float, float]) -> str | None:
        if grid.dtype != self.x_grid.dtype:
            return None
        b, p, base = ctx.b, self.p, self.base
        zdt = np.dtype(grid.dtype)
        ws = np.asarray(p["weight_scale"], np.float32)
        args = [b.initializer(f"{base}_x_scale", np.array(self.x_grid.scale, np.float32)),
                b.initializer(f"{base}_x_zero_point", np.array(0, zdt))]
        y_args = [b.initializer(f"{base}_y_scale", np.array(grid.scale, np.float32)),
                  b.initializer(f"{base}_y_zero_point", np.array(0, zdt))]
        wz = b.initializer(f"{base}_w_zero_point", np.zeros(ws.shape, np.int8))
        ws_name = b.initializer(f"{base}_w_scale", ws)
        bias = [b.initializer(f"{base}_b", p["bias"].astype(np.int32))] if p["bias"] is not None else []
        if isinstance(self.layer, QConv2d):
            w = weight_initializer(ctx, p, base)
            (y,) = b.node("QLinearConv", [self.x, *args, w, ws_name, wz, *y_args, *bias], name=base,
                          **conv_attrs(self.layer))
        elif not bias:
            w = weight_initializer(ctx, p, base, transpose=True)
            (y,) = b.node("QLinearMatMul", [self.x, *args, w, ws_name, wz, *y_args], name=base)
        else:  # linear with bias: a 1x1 QLinearConv on [N, K, 1, 1]
            x4 = b.node("Reshape", [self.x, b.const([0, -1, 1, 1], np.int64)], name=f"{base}_to_nchw")[0]
            w = weight_initializer(ctx, {**p, "weight": p["weight"][:, :, None, None]}, base)
            (y4,) = b.node("QLinearConv", [x4, *args, w, ws_name, wz, *y_args, *bias], name=base,
                           kernel_shape=[1, 1])
            (y,) = b.node("Reshape", [y4, b.const([0, -1], np.int64)], name=f"{base}_to_nc")
        lo, hi = clamp_levels(clamp, grid.scale, grid.qmin, grid.qmax)
        if (lo, hi) != int_range(grid.dtype):
            (y,) = b.node("Clip", [y, b.const(lo, zdt), b.const(hi, zdt)], name=f"{base}_clip")
        return y


@register_handler(FMT, QConv2d, QLinear, opsets=OPSETS)
def layer(ctx: ExportContext, node: fx.Node) -> IntValue:
    lyr, p, x, base = layer_input(ctx, node)
    producer = QLinearProducer(lyr, p, x, Grid.of(lyr.in_q), base)
    return IntValue(None, np.asarray(p["bias_scale"], np.float32), layer_rank(lyr), base, lazy=producer)


layer.check = check_layer
register_structural(FMT, OPSETS)
