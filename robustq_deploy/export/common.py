"""Helpers every export form shares: layer attributes, pooling parameters and their checks."""
from __future__ import annotations

import math

import numpy as np
from torch import fx, nn

from ..quant.convert import clamp_bounds


def pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def conv_attrs(layer: nn.Conv2d) -> dict:
    """ONNX Conv / ConvInteger / QLinearConv attributes of a torch conv layer."""
    ph, pw = pair(layer.padding)
    return {"kernel_shape": pair(layer.kernel_size), "strides": pair(layer.stride),
            "pads": [ph, pw, ph, pw], "dilations": pair(layer.dilation), "group": layer.groups}


def maxpool_attrs(gm: fx.GraphModule, node: fx.Node) -> dict:
    """ONNX MaxPool attributes of an ``nn.MaxPool2d`` module or ``F.max_pool2d`` call."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        k, s, p = m.kernel_size, m.stride, m.padding
    else:
        k = node.args[1]
        s = node.kwargs.get("stride", node.args[2] if len(node.args) > 2 else k) or k
        p = node.kwargs.get("padding", 0)
    ph, pw = pair(p)
    return {"kernel_shape": pair(k), "strides": pair(s), "pads": [ph, pw, ph, pw]}


def check_maxpool(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if m.ceil_mode or m.dilation not in (1, (1, 1)):
            return [f"{node.target}: MaxPool2d with ceil_mode or dilation is not supported"]
    return []


def check_flatten(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        start, end = m.start_dim, m.end_dim
    else:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return [] if (start, end) == (1, -1) else [f"{node.name}: flatten({start}, {end}) is not supported (only 1..-1)"]


def check_avgpool(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    size = gm.get_submodule(node.target).output_size
    return [] if size in (1, (1, 1)) else [f"{node.target}: only global average pooling (output size 1) is supported"]


def check_clamp(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    return [] if clamp_bounds(gm, node) is not None else [f"{node.name}: clamp bounds must be constants"]


def clamp_levels(bounds: tuple[float, float], scale: float, qmin: int, qmax: int) -> tuple[int, int]:
    """Integer range of a grid after a clamp to real ``bounds``: quantization is monotone, so
    ``Q(clamp(x, a, b)) = clamp(Q(x), Q(a), Q(b))``, with ``Q(v) = round_half_even(v / scale)`` in
    float32 as the twin's quantizer computes it."""
    lo, hi = bounds
    s = np.float32(scale)
    if lo > -math.inf:
        qmin = max(qmin, int(np.rint(np.float32(lo) / s)))
    if hi < math.inf:
        qmax = min(qmax, int(np.rint(np.float32(hi) / s)))
    return qmin, qmax


def base_name(node: fx.Node) -> str:
    """Stem for the ONNX names a handler emits (module path with dots replaced)."""
    return str(node.target).replace(".", "_") if node.op == "call_module" else node.name


__all__ = ["base_name", "check_avgpool", "check_clamp", "check_flatten", "check_maxpool", "clamp_bounds", "clamp_levels",
           "conv_attrs", "maxpool_attrs", "pair"]
