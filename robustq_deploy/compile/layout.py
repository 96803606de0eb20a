"""Channels-last activations between the per-op kernels.

The convolution kernels compute in NHWC (a dot-product instruction reduces over neighbouring
channels, a depthwise filter is vectorized over channels), while an ONNX graph, and so every
op the importer emits, is NCHW. :mod:`.tiled` therefore emits each kernel with explicit
transposes around it, ``permute_dims(kernel(permute_dims(x, NHWC)), NCHW)``, and
:func:`sink_transposes` moves every transpose back to NCHW forward, past the elementwise ops and
spatial reductions that follow it, until it meets the transpose to NHWC of the next kernel and
both cancel. What is left is a transpose where the graph enters or leaves the kernels (the
quantized input, an op this pass does not know), and dead code elimination removes the rest.

Rewrites (``T`` = ``permute_dims(., P)``; each exact, since these ops act on every element
alike or reduce over named axes):

* ``T(T'(a))`` with ``P' o P`` the identity -> ``a``;
* an elementwise op whose tensor operands are ``T(a_i)`` (one ``P``), constants or one-element
  tensors -> ``T(op(a_i, permuted constants))`` (a constant is broadcast to the rank first);
* a mean / sum / max / min over ``axes`` with ``keepdims`` -> ``T(reduce(a, P[axes]))``;
* a 2-D max / average pooling of an NHWC tensor transposed to NCHW -> the same pooling in NHWC;
* a concatenation of ``T(a_i)`` (one ``P``) along ``axis`` -> ``T(concat(a_i, P[axis]))``.
"""
from __future__ import annotations

import numpy as np

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)

ELEMENTWISE = frozenset(f"relax.{n}" for n in (
    "astype", "round", "floor", "ceil", "clip", "add", "subtract", "multiply", "divide", "floor_divide",
    "maximum", "minimum", "negative", "abs", "sqrt", "exp", "sigmoid", "tanh", "power", "nn.relu",
    "nn.leakyrelu", "where", "less", "less_equal", "greater", "greater_equal", "equal", "not_equal",
    "right_shift", "left_shift", "bitwise_and", "bitwise_or", "logical_and", "logical_or"))
REDUCTIONS = frozenset(f"relax.{n}" for n in ("mean", "sum", "max", "min"))
POOLS = frozenset(("relax.nn.max_pool2d", "relax.nn.avg_pool2d"))


def _axes(call) -> tuple[int, ...] | None:
    """``permute_dims``' axes or a reduction's axis list (None: all / reversed)."""
    axes = call.attrs.axes if hasattr(call.attrs, "axes") else call.attrs.axis
    return None if axes is None else tuple(int(a) for a in axes)


def _broadcast_scalar(expr, rank: int) -> bool:
    """Whether a tensor has one element (every static dim 1, rank at most ``rank``)."""
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None:
        return False
    return len(values) <= rank and all(getattr(d, "value", None) == 1 for d in values)


def sink_transposes(mod):
    """``mod`` with transposes moved forward and cancelled (see the module docstring)."""
    from tvm import relax

    from .registry import const_value

    @relax.expr_functor.mutator
    class Sink(relax.PyExprMutator):
        def __init__(self, m):
            super().__init__(m)
            self.m = m

        def transposed(self, expr):
            """``(a, P)`` when ``expr`` is bound to ``permute_dims(a, P)``, else None."""
            if not isinstance(expr, relax.Var):
                return None
            bound = self.lookup_binding(expr)
            if isinstance(bound, relax.Call) and getattr(bound.op, "name", "") == "relax.permute_dims":
                axes = _axes(bound)
                if axes is not None:
                    return bound.args[0], axes
            return None

        def permuted(self, value, perm):
            return relax.op.permute_dims(self.builder_.emit(value), list(perm))

        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            name = getattr(call.op, "name", "")
            if name == "relax.permute_dims":
                inner = self.transposed(call.args[0])
                axes = _axes(call)
                if inner is not None and axes is not None and all(inner[1][axes[k]] == k for k in range(len(axes))):
                    return inner[0]
            elif name in ELEMENTWISE:
                new = self.elementwise(call)
                return call if new is None else new
            elif name in REDUCTIONS and call.attrs.keepdims:
                inner = self.transposed(call.args[0])
                axes = _axes(call)
                if inner is not None:
                    a, perm = inner
                    new_axes = None if axes is None else [perm[k % len(perm)] for k in axes]
                    op = getattr(relax.op, name.split(".")[-1])
                    return self.permuted(op(a, new_axes, keepdims=True), perm)
            elif name == "relax.concat" and isinstance(call.args[0], relax.Tuple):
                parts = [self.transposed(f) for f in call.args[0].fields]
                perms = {None if p is None else tuple(p[1]) for p in parts}
                if len(perms) == 1 and None not in perms:
                    perm = perms.pop()
                    axis = int(call.attrs.axis) % len(perm)
                    joined = relax.op.concat([p[0] for p in parts], axis=perm[axis])
                    return self.permuted(joined, perm)
            elif name in POOLS and call.attrs.layout == "NCHW" and (call.attrs.out_layout or "NCHW") == "NCHW":
                inner = self.transposed(call.args[0])
                if inner is not None and tuple(inner[1]) == TO_NCHW:
                    a = call.attrs
                    op = relax.op.nn.max_pool2d if name.endswith("max_pool2d") else relax.op.nn.avg_pool2d
                    pooled = op(inner[0], [int(v) for v in a.pool_size], [int(v) for v in a.strides],
                                 [int(v) for v in a.padding], [int(v) for v in a.dilation], bool(a.ceil_mode),
                                 bool(a.count_include_pad), layout="NHWC", out_layout="NHWC")
                    return self.permuted(pooled, TO_NCHW)
            return call

        def elementwise(self, call):
            perm = None
            for arg in call.args:
                inner = self.transposed(arg)
                if inner is not None:
                    if perm is not None and inner[1] != perm:
                        return None
                    perm = inner[1]
            if perm is None:
                return None
            inverse = [int(i) for i in np.argsort(perm)]
            args = []
            for arg in call.args:
                inner = self.transposed(arg)
                if inner is not None:
                    args.append(inner[0])
                elif const_value(arg) is not None:
                    v = const_value(arg)
                    if v.size == 1 and v.ndim <= len(perm):  # broadcast alike in any layout
                        args.append(arg)
                        continue
                    if v.ndim > len(perm):
                        return None
                    v = v.reshape((1,) * (len(perm) - v.ndim) + v.shape)
                    args.append(relax.const(np.ascontiguousarray(v.transpose(inverse)), str(v.dtype)))
                elif isinstance(getattr(arg, "ty", None), relax.TensorType):
                    if not _broadcast_scalar(arg, len(perm)):
                        return None  # a run-time tensor in the old layout
                    args.append(arg)  # a run-time scalar (e.g. a zero point cast): any layout
                else:
                    args.append(arg)
            return self.permuted(relax.Call(call.op, args, call.attrs, call.ty_args), perm)

        def run(self):
            for gv, func in self.m.functions_items():
                if isinstance(func, relax.Function):
                    self.builder_.update_func(gv, self.visit_expr(func))
            return self.builder_.get()

    return relax.transform.DeadCodeElimination()(Sink(mod).run())


def transposes_left(mod) -> list[str]:
    """The tensor transposes still in ``main`` after :func:`sink_transposes` (each as
    ``"input shape -> axes"``), for the artifact's report: where activations change layout."""
    from tvm import relax

    from .registry import const_value, shape_of

    out: list[str] = []

    def visit(e):
        if (isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.permute_dims"
                and const_value(e.args[0]) is None):
            dims = "x".join(str(d) for d in shape_of(e.args[0]))
            out.append(f"{dims} -> axes {list(_axes(e) or [])}")

    relax.analysis.post_order_visit(mod["main"], visit)
    return out
