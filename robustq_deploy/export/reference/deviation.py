"""How far a correct engine may deviate from the reference run of a QDQ graph, element by element.

A QDQ graph is computed in float between its quantizers, and every engine computes those floats
its own way: the reference sums in float64, onnxruntime in float32 with its own kernels, the
compiled module in fixed point (``m0 * 2**-n``). The real values that reach a ``QuantizeLinear``
therefore differ by rounding, and where one of them sits near a rounding boundary (a near-tie)
one engine rounds up and another down: one level of difference, which the layers after it
propagate. Whether that happens depends on the trained weights and the CPU's float kernels, so a
test that compares a float path with an integer path needs a bound derived from this, not luck.

:func:`rounding_deviation` propagates, for one input batch, a bound ``d`` on ``|other - reference|``
for every value of the graph, using the reference run's own intermediate values:

* inputs and initializers: ``d = 0`` (every engine reads the same bytes);
* ``QuantizeLinear``: the other engine's real input lies within ``D = d / s + slack`` of the
  reference's ``r = x / s``; its level differs by at most the number of rounding boundaries
  (half-integers) in ``[r - D, r + D]``. Far from a tie that is 0, so the bound stays tight;
* ``DequantizeLinear``: ``d * s``;
* ``Conv``, ``Gemm``, ``MatMul``: the same op on ``d`` with the absolute weights, plus the float
  summation error of the reference and of the other engine (``(fan_in + 4) * 2**-23`` times the
  same op on the magnitudes);
* ``Relu``, ``Clip``, ``MaxPool`` (1-Lipschitz, the pool of ``d`` over the same window), shape ops,
  ``Add`` (sum), ``GlobalAveragePool`` / ``AveragePool`` (average of ``d``), ``Concat``.

Any other operator raises :class:`~robustq_deploy.errors.UnsupportedError`. Integer graphs need
no bound: their engines are compared bit for bit.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...errors import UnsupportedError
from .session import OpContext, ReferenceSession, REFERENCE_OPS

# Relative error of one float32 rounding, doubled for the other engine's own rounding.
_ULP = 2.0 ** -23
_LINEAR = {"Conv", "Gemm", "MatMul"}
# Every operator with a rule; pooling and shape ops apply their own function to the deviation.
_RULES = _LINEAR | {"QuantizeLinear", "DequantizeLinear", "Add", "Relu", "Clip", "Identity", "Concat", "MaxPool",
                    "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze"}


def _axis_view(v: np.ndarray, rank: int, axis: int) -> np.ndarray:
    v = np.asarray(v, np.float64)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis % rank] = -1
    return v.reshape(shape)


def _boundaries_within(r: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """How many half-integers ``k + 0.5`` lie in ``[r - reach, r + reach]``."""
    hi = np.floor(r + reach - 0.5)
    lo = np.ceil(r - reach - 0.5)
    return np.maximum(hi - lo + 1.0, 0.0)


def _linear(node: onnx.NodeProto, ctx: OpContext, fn, d_ins: list, v_ins: list) -> np.ndarray:
    """Deviation of ``y = op(a, b) (+ c)``: ``op(da, |b|) + op(|a|, db) + op(da, db)``, plus the
    float summation error of two engines, ``(fan_in + 4) * 2 ulp`` of ``op(|a| + da, |b| + db)``."""
    a, b = (np.abs(np.asarray(v, np.float64)) for v in v_ins[:2])
    da, db = (np.asarray(d, np.float64) for d in d_ins[:2])

    def op(x, w):  # the op without bias on float32 operands, rounded up so the bound stays a bound
        return fn(ctx, x.astype(np.float32), w.astype(np.float32)).astype(np.float64) * (1 + 8 * _ULP)

    dev = op(da, b)
    if np.any(db):
        dev = dev + op(a, db) + op(da, db)
    mag = op(a + da, b + db)
    if len(v_ins) > 2 and v_ins[2] is not None:
        beta = abs(ctx.attrs.get("beta", 1.0)) if node.op_type == "Gemm" else 1.0
        shape = (1, -1) + (1,) * (dev.ndim - 2) if node.op_type == "Conv" else np.shape(v_ins[2])
        dev = dev + beta * np.reshape(d_ins[2], shape)
        mag = mag + beta * np.abs(np.reshape(np.asarray(v_ins[2], np.float64), shape))
    w = np.shape(v_ins[1])
    if node.op_type == "Conv":
        fan_in = int(np.prod(w[1:]))
    elif node.op_type == "Gemm" and ctx.attrs.get("transB", 0):
        fan_in = w[-1]
    else:
        fan_in = w[-2] if len(w) >= 2 else w[0]
    return dev + (fan_in + 4) * 2 * _ULP * mag


def check_rules(model: onnx.ModelProto) -> None:
    """Raise :class:`UnsupportedError` naming every operator of ``model`` without a deviation rule."""
    bad = sorted({n.op_type for n in model.graph.node if n.op_type not in _RULES})
    if bad:
        raise UnsupportedError(f"no deviation rule for: {', '.join(bad)}")


def rounding_deviation(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-element bound on ``|engine output - reference output|`` for each graph output of a
    QDQ ``model`` on ``feeds``, for any engine that implements every quantizer as a rounding of
    (a float or fixed-point approximation of) the same real value."""
    check_rules(model)
    sess = ReferenceSession(model, fuse_requant=False)
    values = {**sess.run_all(feeds), **sess.consts}
    dev: dict[str, np.ndarray] = {}

    def d_of(name: str) -> np.ndarray:
        return dev[name] if name in dev else np.zeros(np.shape(values[name]))

    for node in sess.model.graph.node:
        ctx = OpContext(node, [sess.types.get(i) for i in node.input],
                          attrs={a.name: helper.get_attribute_value(a) for a in node.attribute})
        ins = [values[i] if i else None for i in node.input]
        d_ins = [d_of(i) if i else None for i in node.input]
        op = node.op_type
        if op == "QuantizeLinear":
            x = np.asarray(ins[0], np.float64)
            s = _axis_view(ins[1], x.ndim, ctx.attrs.get("axis", 1))
            r = x / s
            dev[node.output[0]] = _boundaries_within(r, d_ins[0] / s + 4 * _ULP * (np.abs(r) + 1.0))
        elif op == "DequantizeLinear":
            dev[node.output[0]] = d_ins[0] * np.abs(_axis_view(ins[1], np.ndim(ins[0]), ctx.attrs.get("axis", 1)))
        elif op in _LINEAR:
            dev[node.output[0]] = _linear(node, ctx, REFERENCE_OPS[("", op)], d_ins, ins)
        elif not any(np.any(d) for d in d_ins if d is not None):
            continue  # nothing to propagate
        elif op == "Add":
            dev[node.output[0]] = d_ins[0] + d_ins[1]
        elif op in ("Relu", "Clip", "Identity"):  # 1-Lipschitz elementwise
            dev[node.output[0]] = d_ins[0]
        elif op == "Concat":
            dev[node.output[0]] = np.asarray(REFERENCE_OPS[("", op)](ctx, *d_ins), np.float64)
        else:  # pooling and shape ops: the same op on the deviation (max / mean of a window of bounds)
            out = REFERENCE_OPS[("", op)](ctx, np.asarray(d_ins[0], np.float32), *ins[1:])
            dev[node.output[0]] = np.asarray(out, np.float64)
    # the final float32 rounding of each engine
    return {name: d_of(name) + 4 * _ULP * np.abs(np.asarray(values[name], np.float64)) for name in sess.output_names}


def argmax_may_differ(logits: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Rows where an engine within ``bound`` of ``logits`` could pick another class: the best
    class's lower end does not clear every other class's upper end."""
    top = logits.argmax(1)
    rows = np.arange(len(logits))
    lower = logits[rows, top] - bound[rows, top]
    upper = logits + bound
    upper[rows, top] = -np.inf
    return upper.max(1) >= lower


__all__ = ["argmax_may_differ", "check_rules", "rounding_deviation"]
