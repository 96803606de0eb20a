"""Prove where a compiled model computes in float: Relax operators and TIR reductions.

:func:`float_compute` lists every place of a module that multiplies and accumulates in float:

* Relax level: calls of ``relax.nn.conv1d/2d/3d``, ``relax.nn.conv*_transpose``, ``relax.matmul``
  and ``relax.linear`` whose result is a float tensor;
* TIR level (after legalization): every reduction block (a block with an ``init``) that stores
  into a float buffer a value containing a product of two buffer loads, i.e. a float
  multiply-accumulate, whatever Relax operator it came from.

An empty list is the proof that the model's convolutions and matrix products are integer code.
The compile stage records the list in the manifest (``meta.float_compute``).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

_RELAX_MAC_OPS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d", "relax.nn.conv1d_transpose",
                  "relax.nn.conv2d_transpose", "relax.nn.conv3d_transpose", "relax.matmul", "relax.linear")
_CHILDREN = ("body", "seq", "block", "init", "then_case", "else_case", "value", "a", "b", "args", "condition",
             "true_value", "false_value", "indices", "source")


def _is_float(dtype) -> bool:
    return str(dtype).startswith(("float", "bfloat"))


def relax_float_ops(mod) -> list[str]:
    """Float conv / matmul calls in the Relax functions of ``mod``."""
    from tvm import relax

    found: list[str] = []
    for gv, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue

        def visit(e, name=gv.name_hint):
            if isinstance(e, relax.Call) and hasattr(e.op, "name") and e.op.name in _RELAX_MAC_OPS:
                if hasattr(e.ty, "dtype") and _is_float(e.ty.dtype):
                    found.append(f"{name}: {e.op.name} -> {e.ty.dtype}")

        relax.analysis.post_order_visit(func.body, visit)
    return found


def _walk(node: Any, fn: Callable[[Any], None]) -> None:
    if node is None or isinstance(node, (int, float, str)):
        return
    if isinstance(node, (list, tuple)) or type(node).__name__ == "Array":
        for item in node:
            _walk(item, fn)
        return
    fn(node)
    for attr in _CHILDREN:
        child = getattr(node, attr, None)
        if child is not None and not inspect.isroutine(child):  # TIR expressions may be callable
            _walk(child, fn)


def _has_load(expr) -> bool:
    import tvm

    # A buffer load is tvm.ir.TensorLoad in TVM 0.27 (tirx.BufferLoad is only its constructor).
    found = []
    _walk(expr, lambda e: found.append(e) if isinstance(e, tvm.ir.TensorLoad) else None)
    return bool(found)


def _has_load_product(expr) -> bool:
    from tvm import tirx

    hit = []
    _walk(expr, lambda e: hit.append(e) if isinstance(e, tirx.Mul) and _has_load(e.a) and _has_load(e.b) else None)
    return bool(hit)


def tir_macs(mod, products: bool = True) -> list[tuple[str, str, str]]:
    """Every multiply-accumulate reduction block of a legalized ``mod``: (function, block, dtype);
    with ``products=False``, the reduction blocks without a product of loads instead (sums, means)."""
    from tvm import s_tir, tirx

    found: list[tuple[str, str, str]] = []
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue

        def fn(node, name=gv.name_hint):
            if isinstance(node, s_tir.SBlock) and node.init is not None:
                stores = []
                _walk(node.body, lambda s: stores.append(s) if isinstance(s, tirx.BufferStore) else None)
                for st in stores:
                    if _has_load_product(st.value) == products:
                        found.append((name, node.name_hint, str(st.buffer.dtype)))

        _walk(func.body, fn)
    return found


def tir_float_macs(mod) -> list[str]:
    """Float multiply-accumulate reduction blocks in the PrimFuncs of a legalized ``mod``."""
    return [f"{f}: block {b} accumulates {d} products" for f, b, d in tir_macs(mod) if _is_float(d)]


def tir_float_sums(mod) -> list[str]:
    """Float reductions that are not multiply-accumulates (a float average pool, a mean, a
    softmax's sum) in the PrimFuncs of a legalized ``mod``: not conv / matmul arithmetic, but
    float code a reader of "integer code" must be told about (``meta.float_reductions``)."""
    return [f"{f}: block {b} sums {d}" for f, b, d in tir_macs(mod, products=False) if _is_float(d)]


def float_compute(mod) -> list[str]:
    """Both levels; ``mod`` is a Relax module after legalization (it then holds PrimFuncs too)."""
    return relax_float_ops(mod) + tir_float_macs(mod)


__all__ = ["float_compute", "relax_float_ops", "tir_float_macs", "tir_float_sums", "tir_macs"]
