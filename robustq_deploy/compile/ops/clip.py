"""ONNX ``Clip`` as Relax ``maximum`` / ``minimum`` ops.

TVM's converter emits the same two operations as opaque TE calls; as Relax ops they stay
visible to the compile stage's graph passes (:func:`robustq_deploy.compile.layout.sink_transposes`
moves the kernels' layout transposes through them, as through any elementwise op). Semantics
are TVM's converter's and onnxruntime's: a missing bound is no bound, a NaN bound is no bound.
"""
from __future__ import annotations

import math

import numpy as np

from ..registry import Converter, const_value, dtype_of, register_converter


def _bound(bb, x, bound, lower: bool):
    """``maximum(x, bound)`` (``lower``) or ``minimum``; NaN bounds mean no bound."""
    from tvm import relax

    op = relax.op.maximum if lower else relax.op.minimum
    if bound is None:
        return x
    if isinstance(bound, float):
        bound = relax.const(-math.inf if lower and math.isnan(bound) else
                            math.inf if math.isnan(bound) else bound, dtype_of(x))
        return bb.emit(op(x, bound))
    v = const_value(bound)
    if v is not None and np.issubdtype(v.dtype, np.floating) and np.isnan(v).all():
        return x
    if np.dtype(dtype_of(bound)).kind == "f" and v is None:
        inf = relax.const(-math.inf if lower else math.inf, dtype_of(bound))
        bound = bb.emit(relax.op.where(relax.op.isnan(bound), inf, bound))
    return bb.emit(op(x, bound))


@register_converter("Clip")
class Clip(Converter):
    @classmethod
    def impl_v1(cls, ctx, inputs):  # min / max attributes (default: none)
        x = _bound(ctx.bb, inputs[0], float(ctx.attr("min", -math.inf)), True)
        return _bound(ctx.bb, x, float(ctx.attr("max", math.inf)), False)

    @classmethod
    def impl_v6(cls, ctx, inputs):
        return cls.impl_v1(ctx, inputs)

    @classmethod
    def impl_v11(cls, ctx, inputs):  # min / max inputs, each optional
        x = _bound(ctx.bb, inputs[0], inputs[1] if len(inputs) > 1 else None, True)
        return _bound(ctx.bb, x, inputs[2] if len(inputs) > 2 else None, False)

    @classmethod
    def impl_v12(cls, ctx, inputs):  # + integer types
        return cls.impl_v11(ctx, inputs)

    @classmethod
    def impl_v13(cls, ctx, inputs):
        return cls.impl_v11(ctx, inputs)
