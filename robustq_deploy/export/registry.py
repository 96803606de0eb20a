"""Export handlers, registered per format and per op family, and the pre-export scan.

A handler is a function ``handler(ctx, node) -> output value name`` for one kind of fx node
(a module class such as :class:`~robustq_deploy.quant.QConv2d`, or a function such as
``torch.relu``), registered with ``@register_handler(format, *targets, opsets=(lo, hi))``.
Before anything is written, :func:`scan` walks the whole traced model and raises one
:class:`~robustq_deploy.errors.UnsupportedError` listing every node no handler covers (or
whose handler does not support the requested opset). A handler's optional ``check(gm, node)``
attribute returns the problems that node has; the scan collects them all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from ..errors import UnsupportedError
from ..registry import Registry
from ..quant import QAdd, QAvgPool2d, QConcat, QUANT_LAYERS
from .graph import GraphBuilder


@dataclass(frozen=True)
class Handler:
    fn: Callable
    opsets: tuple[int, int]


HANDLERS: Registry[Handler] = Registry("export handler")  # keyed by (format, module class or function)


def register_handler(fmt: str, *targets: Any, opsets: tuple[int, int] = (13, 23)):
    def deco(fn):
        for t in targets:
            HANDLERS.add((fmt, t), Handler(fn, opsets))
        return fn
    return deco


def export_opsets() -> tuple[int, int]:
    """The widest opset range some handler supports (the pre-export scan checks each layer's)."""
    spans = [h.opsets for _, h in HANDLERS.items()]
    return min(lo for lo, _ in spans), max(hi for _, hi in spans)


def export_formats() -> list[str]:
    return sorted({fmt for fmt, _ in HANDLERS.names()})


LEAF_MODULES = (*QUANT_LAYERS, QAdd, QConcat, QAvgPool2d)


class _Tracer(fx.Tracer):
    """Keeps quantized layers and residual adds as leaves so their handlers see the whole module."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_MODULES) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    graph = _Tracer().trace(model)
    return fx.GraphModule(model, graph)


def node_key(gm: fx.GraphModule, node: fx.Node) -> Any:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target))
    if node.op in ("call_function", "call_method"):
        return node.target
    return node.op  # placeholder, output, get_attr


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    key = node_key(gm, node)
    kind = getattr(key, "__name__", str(key))
    return f"{node.target} ({kind})" if node.op == "call_module" else kind


def handler_for(fmt: str, key: Any) -> Handler | None:
    table = {t: h for (f, t), h in HANDLERS.items() if f == fmt}
    if key in table:
        return table[key]
    if isinstance(key, type):  # subclasses of a registered module class
        for k, h in table.items():
            if isinstance(k, type) and issubclass(key, k):
                return h
    return None


def scan(gm: fx.GraphModule, fmt: str, opset: int) -> None:
    """Raise one error naming every node that cannot be exported in ``fmt`` at ``opset``."""
    problems = []
    for node in gm.graph.nodes:
        h = handler_for(fmt, node_key(gm, node))
        if h is None:
            problems.append(f"{describe(gm, node)}: no {fmt} handler")
        elif not h.opsets[0] <= opset <= h.opsets[1]:
            problems.append(f"{describe(gm, node)}: {fmt} handler supports opsets {h.opsets[0]}-{h.opsets[1]}, not {opset}")
        else:
            problems.extend(getattr(h.fn, "check", lambda gm, n: [])(gm, node))
    if problems:
        counts: dict[str, int] = {}
        for p in problems:  # one entry per distinct problem, in order of appearance
            counts[p] = counts.get(p, 0) + 1
        listed = [p if n == 1 else f"{p} (x{n})" for p, n in counts.items()]
        raise UnsupportedError(f"cannot export as {fmt} (opset {opset}): " + "; ".join(listed))


class ExportContext:
    """State shared by the handlers of one export: builder, traced module, value names."""

    def __init__(self, gm: fx.GraphModule, builder: GraphBuilder, fmt: str, opset: int, input_shape):
        self.gm = gm
        self.b = builder
        self.fmt = fmt
        self.opset = opset
        self.input_shape = tuple(input_shape)
        self.values: dict[str, Any] = {}  # fx node name -> ONNX value name (or handler-specific)
        self.shapes: dict[str, tuple[int, ...]] = {}  # fx node name -> output shape at batch 1
        self.cache: dict[Any, Any] = {}  # handler-specific memo (e.g. one requantization per grid)

    def module(self, node: fx.Node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def arg(self, node: fx.Node, i: int = 0) -> Any:
        a = node.args[i]
        return self.values[a.name] if isinstance(a, fx.Node) else a


def run_handlers(ctx: ExportContext) -> None:
    for node in ctx.gm.graph.nodes:
        h = handler_for(ctx.fmt, node_key(ctx.gm, node))
        ctx.values[node.name] = h.fn(ctx, node)


_RELU = (torch.relu, torch.nn.functional.relu, nn.ReLU, "relu")
_CLAMP = (torch.nn.functional.hardtanh, torch.nn.functional.relu6, nn.Hardtanh, nn.ReLU6)  # bounds: clamp_bounds
_FLATTEN = (torch.flatten, nn.Flatten)
_MAXPOOL = (nn.MaxPool2d, torch.nn.functional.max_pool2d)
