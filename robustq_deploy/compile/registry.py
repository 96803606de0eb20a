"""The project's ONNX -> Relax converters: one class per (domain, op), versioned by opset.

A converter is a subclass of :class:`Converter` registered with ``@register_converter(op,
domain=...)``. Like TVM's own ``OnnxOpConverter`` it holds one ``impl_vN(ctx, inputs)`` class
method per opset where the op changed; the importer calls the one with the largest ``N`` not
above the model's opset *of the op's domain*. Unlike TVM's, a model whose opset is older than
every ``impl_vN`` is refused by the scan instead of silently using the oldest version.

``impl_vN`` receives a :class:`ConverterContext` (block builder, the ONNX node, parsed attributes,
logical ONNX element types of inputs and outputs) and the Relax expressions of the inputs
(``None`` for omitted optional inputs), and returns a Relax expression (a ``relax.Tuple`` for
several outputs). ``check(ctx)`` returns the problems that make a node unsupported (wrong
element type, 3-D conv, ...); the scan collects them for every node before anything converts.

To add an op: write a converter class in the ``ops`` module of its family, decorate it, and
add node tests under ``tests/compile/``. Registering the same (domain, op) twice is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from ..dtypes import DType
from ..registry import Registry
from .dtypes import QTYPES, qtype

DEFAULT_DOMAIN = ""
_DOMAIN_ALIASES = {"ai.onnx": DEFAULT_DOMAIN}


def normalize_domain(domain: str) -> str:
    return _DOMAIN_ALIASES.get(domain, domain)


@dataclass
class ConverterContext:
    """What a converter knows about the node it converts."""

    bb: Any  # relax.BlockBuilder
    node: onnx.NodeProto
    opset: int
    in_types: tuple[int | None, ...] = ()
    out_types: tuple[int | None, ...] = ()
    target: Any = None  # targets.TargetDesc being compiled for (None: not known, e.g. in the scan)
    binary_values: frozenset[str] = frozenset()  # values known to hold only -1 and +1
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.attrs:
            self.attrs = {a.name: helper.get_attribute_value(a) for a in self.node.attribute}
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self.attrs.items()}

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def where(self) -> str:
        """How errors name this node: ``QLinearConv 'conv1'``."""
        return f"{self.node.op_type} {self.node.name!r}" if self.node.name else self.node.op_type

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def input_is_binary(self, i: int) -> bool:
        """Whether input ``i`` is known to hold only -1 and +1 (see :func:`.importer.binary_values`)."""
        return self.has_input(i) and self.node.input[i] in self.binary_values

    def in_type(self, i: int) -> int | None:
        return self.in_types[i] if i < len(self.in_types) else None

    def in_qtype(self, i: int, expr=None) -> DType:
        """Integer grid of input ``i``: its logical ONNX type, else its Relax storage dtype."""
        t = self.in_type(i)
        if t in QTYPES:
            return qtype(t)
        if expr is not None:
            dt = dtype_of(expr)
            for q in QTYPES.values():
                if q.name == dt:
                    return q
        raise KeyError(f"{self.where}: input {i} has no integer type")

    def emit(self, expr):
        return self.bb.emit(expr)


def dtype_of(expr) -> str:
    return str(expr.ty.dtype)


def shape_of(expr) -> list:
    """Static dims as ints, symbolic ones as TIR expressions."""
    return [int(d) if hasattr(d, "value") else d for d in expr.ty.shape.values]


def const_value(expr) -> np.ndarray | None:
    """The numpy value of a Relax constant, None for anything computed at run time."""
    import tvm

    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    return None


class Converter:
    """Base of the project's converters; subclasses define ``impl_vN`` class methods."""

    op: str = ""
    domain: str = DEFAULT_DOMAIN

    @classmethod
    def versions(cls) -> list[int]:
        return sorted(int(n[len("impl_v"):]) for n in dir(cls) if n.startswith("impl_v"))

    @classmethod
    def for_opset(cls, opset: int) -> Callable | None:
        """The implementation for ``opset``: the largest ``impl_vN`` with ``N <= opset``."""
        usable = [v for v in cls.versions() if v <= opset]
        return getattr(cls, f"impl_v{max(usable)}") if usable else None

    @classmethod
    def check(cls, ctx: ConverterContext) -> list[str]:
        """Problems that make this node unsupported (empty: supported)."""
        return []


def _load_ops() -> None:
    import importlib

    importlib.import_module("robustq_deploy.compile.ops")  # the converter modules register themselves


CONVERTERS: Registry[type[Converter]] = Registry("converter", load=_load_ops)  # keyed by (domain, op_type)


def register_converter(op: str, domain: str = DEFAULT_DOMAIN):
    """Class decorator: register ``cls`` as the converter of ``domain::op``."""
    def deco(cls: type[Converter]) -> type[Converter]:
        key = (normalize_domain(domain), op)
        if not cls.versions():
            raise ValueError(f"converter {cls.__name__} defines no impl_vN method")
        cls.op, cls.domain = op, key[0]
        return CONVERTERS.add(key, cls)
    return deco


def converter_for(domain: str, op: str) -> type[Converter] | None:
    key = (normalize_domain(domain), op)
    return CONVERTERS[key] if key in CONVERTERS else None


def registered_ops() -> list[str]:
    """``domain::op`` names of every converter the project owns (default domain unprefixed)."""
    return sorted(f"{d}::{o}" if d else o for d, o in CONVERTERS.names())
