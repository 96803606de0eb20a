"""The graph twin's op table: per ``(domain, op_type)``, the PyTorch function that runs it.

An op function takes a :class:`TwinOpContext` (the node, its attributes, a per-node cache) and the
input values (:class:`~.values.Val`) and returns a value or a list of them; it is registered
with ``@twin_op("OpType", domain=...)`` in one of the ``ops_*`` modules of this package.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import onnx

from ..registry import Registry

OpFn = Callable[..., Any]
TWIN_OPS: Registry[OpFn] = Registry("twin op")  # keyed by (domain, op_type)


def twin_op(*op_types: str, domain: str = ""):
    """Register the decorated function as the twin of ``op_types`` in ``domain``."""
    def deco(fn: OpFn) -> OpFn:
        for op in op_types:
            TWIN_OPS.add((domain, op), fn)
        return fn
    return deco


def twin_ops() -> list[str]:
    return sorted(f"{d}::{o}" if d else o for d, o in TWIN_OPS.names())


@dataclass
class TwinOpContext:
    node: onnx.NodeProto
    attrs: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)  # per-node constants an op function derives once
    fast: bool = False  # float ops of float graphs in float32 (see GraphTwin)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    @property
    def where(self) -> str:
        return f"{self.node.op_type} node {self.node.name or self.node.output[0]!r}"


__all__ = ["TWIN_OPS", "TwinOpContext", "OpFn", "twin_op", "twin_ops"]
