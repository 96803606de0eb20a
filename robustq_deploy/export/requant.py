"""Fixed-point requantization written in standard ONNX integer ops, and its pattern matcher.

:mod:`robustq_deploy.fixed_point` defines requantization as
``y = clamp((x * m0 + 2**(n-1)) >> n, qmin, qmax)`` on int64 with an arithmetic (flooring)
shift. ONNX has no signed shift (``BitShift`` is unsigned-only) and integer ``Div`` truncates
toward zero, so the exporters emit the floor shift exactly as an exact division::

    x64 = Cast(x, to=INT64)
    t   = Add(Mul(x64, m0), r)          # r = 2**(n-1)
    f   = Div(Sub(t, Mod(t, d)), d)     # d = 2**n, Mod with fmod=0 (sign of the divisor)
    y   = Cast(Clip(f, qmin, qmax), to=UINT8 / INT8)

Why this is exact: with ``fmod=0`` and ``d > 0``, ``Mod(t, d)`` is the floor remainder
``t - d * floor(t / d)`` in ``[0, d)``, so ``t - Mod(t, d)`` is a multiple of ``d`` and the
division has no remainder: truncation and flooring agree and ``f = floor(t / d) = t >> n``.
No step overflows int64: ``|x * m0| < 2**31 * 2**31 = 2**62``, ``r <= 2**61``, ``d <= 2**62``.
``m0``, ``r`` and ``d`` are per-tensor scalars or per-channel constants shaped to broadcast
along axis 1. Zero points are 0 throughout this project, so no zero-point ``Add`` is emitted.

:func:`match_requantize` finds these chains in a graph; the numpy reference executes each match
as one call of :func:`~robustq_deploy.fixed_point.requantize` (and proves, in tests, that
the op-by-op execution gives the same bits), and the TVM lowering can replace each match by a
fused fixed-point multiply.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..dtypes import dtype
from ..fixed_point import multiplier_for
from .graph import GraphBuilder



def channel_shape(values: np.ndarray, rank: int) -> np.ndarray:
    """A scalar stays a scalar; a per-channel vector ``[C]`` becomes ``[1, C, 1, ...]`` (axis 1)."""
    v = np.asarray(values)
    if v.ndim == 0:
        return v
    shape = [1] * rank
    shape[1] = v.size
    return v.reshape(shape)


def emit_requantize(b: GraphBuilder, x: str, acc_scale, out_scale, qmin: int, qmax: int, out_dtype: str,
                    rank: int, base: str) -> str:
    """Requantize integer tensor ``x`` (real scale ``acc_scale``, scalar or per channel on axis 1)
    to the grid ``out_scale`` with range ``[qmin, qmax]``, as an ``out_dtype`` tensor."""
    m0, n = multiplier_for(acc_scale, out_scale)
    return emit_fixed_point(b, x, m0, n, qmin, qmax, out_dtype, rank, base)


def emit_fixed_point(b: GraphBuilder, x: str, m0, n, qmin: int, qmax: int, out_dtype: str, rank: int,
                     base: str) -> str:
    """The chain of the module docstring for a given mantissa ``m0`` and shift ``n`` (1..62)."""
    m0 = channel_shape(m0, rank).astype(np.int64)
    n = channel_shape(n, rank).astype(np.int64)
    rnd = np.left_shift(np.int64(1), n - 1)
    d = np.left_shift(np.int64(1), n)
    (x64,) = b.node("Cast", [x], name=f"{base}_rq_cast", to=TensorProto.INT64)
    (p,) = b.node("Mul", [x64, b.initializer(f"{base}_rq_m0", m0)], name=f"{base}_rq_mul")
    (t,) = b.node("Add", [p, b.initializer(f"{base}_rq_half", rnd)], name=f"{base}_rq_round")
    d_name = b.initializer(f"{base}_rq_div", d)
    (r,) = b.node("Mod", [t, d_name], name=f"{base}_rq_mod", fmod=0)
    (f,) = b.node("Sub", [t, r], name=f"{base}_rq_sub")
    (q,) = b.node("Div", [f, d_name], name=f"{base}_rq_shift")
    (c,) = b.node("Clip", [q, b.const(qmin, np.int64), b.const(qmax, np.int64)], name=f"{base}_rq_clip")
    (y,) = b.node("Cast", [c], name=f"{base}_rq_out", to=dtype(out_dtype).onnx)
    return y


@dataclass(frozen=True)
class RequantMatch:
    """One requantization chain: ``output = Cast(clamp((input * m0 + 2**(n-1)) >> n))``."""

    input: str
    output: str
    nodes: tuple[str, ...]  # node names, in graph order
    m0: np.ndarray
    n: np.ndarray
    qmin: int
    qmax: int
    out_type: int  # ONNX elem type of the output


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def match_requantize(graph: onnx.GraphProto) -> list[RequantMatch]:
    """Every requantization chain written by :func:`emit_requantize` in ``graph``."""
    consts = _constants(graph)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    outputs = {o.name for o in graph.output}

    def only_user(value: str, op: str) -> onnx.NodeProto | None:
        us = users.get(value, [])
        if len(us) != 1 or us[0].op_type != op or us[0].domain not in ("", "ai.onnx") or value in outputs:
            return None
        return us[0]

    def attr(node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def const(name: str) -> np.ndarray | None:
        v = consts.get(name)
        return v if v is not None and v.dtype == np.int64 else None

    found = []
    for cast in graph.node:
        if cast.op_type != "Cast" or attr(cast, "to") != TensorProto.INT64:
            continue
        mul = only_user(cast.output[0], "Mul")
        if mul is None or mul.input[0] != cast.output[0] or const(mul.input[1]) is None:
            continue
        add = only_user(mul.output[0], "Add")
        if add is None or add.input[0] != mul.output[0] or const(add.input[1]) is None:
            continue
        t = add.output[0]
        us = users.get(t, [])
        mod = next((u for u in us if u.op_type == "Mod"), None)
        sub = next((u for u in us if u.op_type == "Sub"), None)
        if len(us) != 2 or mod is None or sub is None or t in outputs or attr(mod, "fmod", 0) != 0:
            continue
        if list(mod.input)[0] != t or list(sub.input) != [t, mod.output[0]] or len(users.get(mod.output[0], [])) != 1:
            continue
        div = only_user(sub.output[0], "Div")
        if div is None or div.input[0] != sub.output[0]:
            continue
        d, d2, rnd, m0 = const(mod.input[1]), const(div.input[1]), const(add.input[1]), const(mul.input[1])
        if d is None or d2 is None or not np.array_equal(d, d2) or np.any(d < 2) or np.any(d & (d - 1)):
            continue
        n = np.log2(d).astype(np.int64)
        if not np.array_equal(rnd, d // 2):
            continue
        clip = only_user(div.output[0], "Clip")
        if clip is None or len(clip.input) != 3:
            continue
        lo, hi = const(clip.input[1]), const(clip.input[2])
        out = only_user(clip.output[0], "Cast")
        if lo is None or hi is None or lo.size != 1 or hi.size != 1 or out is None:
            continue
        names = (cast.name, mul.name, add.name, mod.name, sub.name, div.name, clip.name, out.name)
        found.append(RequantMatch(cast.input[0], out.output[0], names, m0, n, int(lo), int(hi), attr(out, "to")))
    return found


__all__ = ["RequantMatch", "channel_shape", "emit_fixed_point", "emit_requantize", "match_requantize"]
