"""Per op kind, the implementations a converter lowers an integer layer to.

Converters do not hard-code how a bit-packed (or integer) layer is computed; they describe the
call (:class:`OpCall`: block builder, target, operands, attributes) and :func:`lower` picks an
implementation registered for that op kind:

    @register_implementation("binary_gemm", "avx512-popcount", priority=10)
    def fast_binary_gemm(call: OpCall):
        if call.target is None or not call.target.features().vpopcntdq:
            return None            # not applicable here: the next implementation is tried
        return call.bb.emit_te(...)

Implementations are tried from the highest ``priority`` down; the first one that returns an
expression wins. Every op kind ships a generic, exact implementation at priority 0 (in the
converter modules), so a library of implementations (:mod:`.tiled`, backed by the kernels of
:mod:`robustq_deploy.kernels`) only adds faster ones. An implementation
must compute exactly the generic one's integers; the tests compare them bit for bit.

A library registers its implementations with ``library="<name>"``: those are tried only inside
:func:`use_libraries` naming it (the compile stage opens the libraries its target description
lists, ``TargetDesc.kernels``), so registering one never changes what an unrelated compile in
the same process picks.

Op kinds and their operands (constants are numpy arrays):

* ``int_conv2d``: ``x`` (NCHW / NCW), ``w`` (OIHW / OIW, Relax), ``x_zp``, ``w_zp`` (Relax or None),
  attrs ``strides``, ``padding`` (``[top, left, bottom, right]``), ``dilation``, ``groups``;
  result the int32 accumulator ``sum((x - x_zp) * (w - w_zp))``.
* ``int_matmul``: ``a`` ([.., M, K]), ``b`` ([K, N] or batched), ``a_zp`` (scalar or [M, 1]),
  ``b_zp`` (scalar or per column); result int32 ``(a - a_zp) @ (b - b_zp)``.
* ``binary_conv2d`` / ``ternary_conv2d``: ``x`` (Relax int8/uint8 NCHW), ``w`` (packed uint8, the
  ``ai.robustq`` layout), attrs ``kernel_shape``, ``strides``, ``pads``, ``x_binary`` (bool:
  ``x`` is known to hold only -1/+1); result int32 NCHW accumulator.
* ``binary_gemm`` / ``ternary_gemm``: ``x`` ([N, K]), ``w`` (packed), attrs ``x_binary``;
  result int32 [N, M].
"""
from __future__ import annotations

import contextlib
import contextvars
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..registry import Registry

Implementation = Callable[["OpCall"], Any]


@dataclass
class OpCall:
    op: str
    bb: Any  # relax.BlockBuilder
    target: Any  # robustq_deploy.targets.TargetDesc or None
    operands: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    chosen: str = ""  # filled by lower(): the implementation that produced the result


@dataclass(frozen=True)
class RegisteredImplementation:
    op: str
    name: str
    fn: Implementation
    priority: int
    library: str | None = None  # tried only inside use_libraries(library); None: always


def _load_generic() -> None:
    import importlib

    importlib.import_module("robustq_deploy.compile.ops")  # the converters register the generic implementations


IMPLEMENTATIONS: Registry[RegisteredImplementation] = Registry(  # keyed by (op kind, name)
    "implementation", load=_load_generic)
_USED: contextvars.ContextVar[Counter | None] = contextvars.ContextVar("robustq_implementations_used", default=None)
_LAYERS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("robustq_layers", default=None)
_PICKED: contextvars.ContextVar[list | None] = contextvars.ContextVar("robustq_layer_picked", default=None)
_LIBRARIES: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("robustq_implementation_libraries",
                                                                           default=frozenset())


@contextlib.contextmanager
def _bound(var: contextvars.ContextVar, value):
    """``var`` set to ``value`` inside the block (which receives ``value``)."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


def use_libraries(*names: str):
    """Let :func:`lower` try the implementations of the libraries ``names`` in the block."""
    return _bound(_LIBRARIES, _LIBRARIES.get() | frozenset(names))


def record_implementations():
    """Count the implementations :func:`lower` picks inside the block (``"op:name" -> n``)."""
    return _bound(_USED, Counter())


def record_layers():
    """Collect, per layer converted inside :func:`layer` blocks, what it was lowered to."""
    return _bound(_LAYERS, {})


@contextlib.contextmanager
def layer(name: str) -> Iterator[None]:
    """Record under ``name`` the implementations :func:`lower` picks inside the block
    (``"op:name"``, comma separated), or ``"relax ops"`` when the converter emitted Relax
    operators without the per-op hook; nothing unless :func:`record_layers` is active."""
    layers = _LAYERS.get()
    if layers is None:
        yield
        return
    with _bound(_PICKED, []) as picked:
        yield
    layers[name] = ", ".join(picked) if picked else "relax ops"


def register_implementation(op: str, name: str, priority: int = 0, library: str | None = None):
    """Register ``fn(call) -> relax.Expr | None`` as implementation ``name`` of ``op`` (of the
    library ``library``, when given: then only tried inside :func:`use_libraries`)."""
    def deco(fn: Implementation) -> Implementation:
        IMPLEMENTATIONS.add((op, name), RegisteredImplementation(op, name, fn, priority, library))
        return fn
    return deco


def _of(op: str) -> list[RegisteredImplementation]:
    """The implementations of ``op``, highest priority first (registration order among equals)."""
    return sorted((k for (o, _), k in IMPLEMENTATIONS.items() if o == op), key=lambda k: -k.priority)


def implementation_names(op: str) -> list[str]:
    return [k.name for k in _of(op)]


def lower(call: OpCall, only: str | None = None):
    """The first applicable implementation's result (``only``: force one implementation)."""
    impls = _of(call.op)
    if only is not None:
        impls = [k for k in impls if k.name == only]
        if not impls:
            known = ", ".join(implementation_names(call.op))
            raise KeyError(f"no implementation {only!r} of {call.op!r}; known: {known}")
    else:
        active = _LIBRARIES.get()
        impls = [k for k in impls if k.library is None or k.library in active]
    outer = _PICKED.get()
    for impl in impls:
        with _bound(_PICKED, None):  # a layer records the implementation it asked for, not those inside it
            out = impl.fn(call)
        if out is not None:
            call.chosen = impl.name
            used = _USED.get()
            if used is not None:
                used[f"{call.op}:{impl.name}"] += 1
            if outer is not None:
                outer.append(f"{call.op}:{impl.name}")
            return out
    raise LookupError(f"no implementation of {call.op!r} applies")


__all__ = ["IMPLEMENTATIONS", "OpCall", "RegisteredImplementation", "implementation_names", "layer", "lower",
           "record_implementations", "record_layers",
           "register_implementation", "use_libraries"]
