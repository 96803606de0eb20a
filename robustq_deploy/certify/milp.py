"""Complete check of small programs: the integer program as a mixed-integer linear program.

Every value of a :class:`~.program.Program` becomes variables bounded by the interval pass:
input levels are integers in their box; a linear step is an equality; a requantization is an
integer ``y0`` with ``acc * M + e_lo <= y0 <= acc * M + e_hi`` (the rounding of
:mod:`.linear`: ``[-1/2 + 2**-n, 1/2]`` for the fixed-point shift, which, ``y0`` being an
integer, is exactly its floor; ``[-1/2 - slack, 1/2 + slack]`` for a QDQ quantizer, any
rounding of any engine), followed by the clamp as ``max``/``min`` with one binary each where
the interval says the clamp can act; max pooling with one binary per window input
(DeepPoly's dominance removes it where one input always wins). The margin
``s_y acc_y - s_j acc_j`` is minimized for each other class ``j`` with SciPy's ``milp`` (HiGHS)
under a time limit per point.

Verdicts: *certified* when every class's proven lower bound (the solver's dual bound) clears
the output's float deviation by ``tol``; a solution with a negative margin is a *candidate*
counterexample, whose input is replayed (on the reference interpreter by default, on a deployed
engine when given) and reported *broken* only if the replay misclassifies; anything else is
*unknown*. The solver's feasibility tolerances loosen constraints, which can only lower the
minimum (a certificate stays sound); its dual bound is trusted within ``tol``.

Sign thresholds (binary layers) are not encoded: such programs raise
:class:`~robustq_deploy.errors.UnsupportedError`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds as LPBounds, LinearConstraint, milp

from ..errors import UnsupportedError
from ..quant.fixed_point import rounding_shift
from . import program as P
from .interval import IntervalResult, output_deviation
from .linear import pool_windows


class _Model:
    """Variables and constraints of one point's MILP (shared by the per-class objectives)."""

    def __init__(self):
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[np.ndarray, np.ndarray, float, float]] = []  # (cols, coefs, lb, ub)

    def vars(self, lo, hi, integer: bool) -> np.ndarray:
        lo, hi = np.asarray(lo, np.float64).reshape(-1), np.asarray(hi, np.float64).reshape(-1)
        start = len(self.lo)
        self.lo.extend(lo)
        self.hi.extend(hi)
        self.integer.extend([int(integer)] * len(lo))
        return np.arange(start, start + len(lo))

    def row(self, cols, coefs, lb: float, ub: float) -> None:
        self.rows.append((np.asarray(cols), np.asarray(coefs, np.float64), lb, ub))

    def constraint(self) -> LinearConstraint:
        data, ri, ci, lb, ub = [], [], [], [], []
        for i, (c, v, a, b) in enumerate(self.rows):
            ci.append(c)
            data.append(v)
            ri.append(np.full(len(c), i))
            lb.append(a)
            ub.append(b)
        a = sparse.csr_array((np.concatenate(data), (np.concatenate(ri), np.concatenate(ci))),
                             shape=(len(self.rows), len(self.lo)))
        return LinearConstraint(a, lb, ub)


def linear_matrix(step: P.Linear, in_shape: tuple[int, ...]) -> sparse.csr_array:
    """The linear step as a sparse matrix ``[out elements, in elements]``."""
    if step.kind == "matmul":
        return sparse.csr_array(step.weight.T.astype(np.float64))
    c, h, w = in_shape
    m, cg, kh, kw = step.weight.shape
    top, left, bottom, right = step.pads
    sh, sw = step.strides
    dh, dw = step.dilations
    idx = np.full((c, h + top + bottom, w + left + right), -1, np.int64)
    idx[:, top:top + h, left:left + w] = np.arange(c * h * w).reshape(c, h, w)
    ho = (idx.shape[1] - (kh - 1) * dh - 1) // sh + 1
    wo = (idx.shape[2] - (kw - 1) * dw - 1) // sw + 1
    rows, cols, vals = [], [], []
    g = step.group
    for o in range(m):
        grp = o // (m // g)
        for ci in range(cg):
            for i in range(kh):
                for j in range(kw):
                    wv = step.weight[o, ci, i, j]
                    if wv == 0:
                        continue
                    src = idx[grp * cg + ci, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
                    out = o * ho * wo + np.arange(ho * wo)
                    keep = src.reshape(-1) >= 0
                    rows.append(out[keep])
                    cols.append(src.reshape(-1)[keep])
                    vals.append(np.full(int(keep.sum()), float(wv)))
    if not rows:
        return sparse.csr_array((m * ho * wo, c * h * w))
    return sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(m * ho * wo, c * h * w))


def _clip_vars(mdl: _Model, x: np.ndarray, x_lo: np.ndarray, x_hi: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Integer variables ``clip(x, lo, hi)`` of integer variables ``x`` (ranges ``[x_lo, x_hi]``)."""
    out = np.empty(len(x), np.int64)
    for i in range(len(x)):
        a, b = x_lo[i], x_hi[i]
        cur, c_lo, c_hi = x[i], a, b
        if a < lo:  # w = max(x, lo); d = 1 on the branch x <= lo (w = lo), d = 0 on x >= lo (w = x)
            w = mdl.vars(max(a, lo), max(b, lo), True)[0]
            if b <= lo:
                mdl.row([w], [1.0], lo, lo)
            else:
                d = mdl.vars(0, 1, True)[0]
                mdl.row([w, cur], [1.0, -1.0], 0, np.inf)  # w >= x
                mdl.row([w, cur, d], [1.0, -1.0, -(lo - a)], -np.inf, 0)  # w <= x + (lo - a) d
                mdl.row([w, d], [1.0, b - lo], -np.inf, b)  # w <= lo + (b - lo) (1 - d)
            cur, c_lo, c_hi = w, max(a, lo), max(b, lo)
        if c_hi > hi:  # z = min(w, hi); e = 1 on the branch w >= hi (z = hi), e = 0 on w <= hi (z = w)
            z = mdl.vars(min(c_lo, hi), min(c_hi, hi), True)[0]
            if c_lo >= hi:
                mdl.row([z], [1.0], hi, hi)
            else:
                e = mdl.vars(0, 1, True)[0]
                mdl.row([z, cur], [1.0, -1.0], -np.inf, 0)  # z <= w
                mdl.row([z, cur, e], [1.0, -1.0, c_hi - hi], 0, np.inf)  # z >= w - (c_hi - hi) e
                mdl.row([z, e], [1.0, -(hi - c_lo)], c_lo, np.inf)  # z >= c_lo + (hi - c_lo) e
            cur = z
        out[i] = cur
    return out


def build(res: IntervalResult, i: int) -> tuple[_Model, dict[str, np.ndarray]]:
    """The MILP of point ``i`` of ``res`` (variables of every program value, flat)."""
    prog = res.program
    mdl = _Model()
    var: dict[str, np.ndarray] = {}
    for s in prog.steps:
        if isinstance(s, P.Output):
            break
        b = res.bounds[s.out]
        lo, hi = b.lo[i].reshape(-1).astype(np.float64), b.hi[i].reshape(-1).astype(np.float64)
        if isinstance(s, P.InputQuant):
            var[s.out] = mdl.vars(lo, hi, True)
            continue
        x = var[s.ins[0]]
        b_in = res.bounds[s.ins[0]]
        l_in, u_in = b_in.lo[i].reshape(-1).astype(np.float64), b_in.hi[i].reshape(-1).astype(np.float64)
        if s.out in res.wrap:
            raise UnsupportedError("the complete check does not encode int32 wrap-around")
        if isinstance(s, P.Reshape):
            var[s.out] = x
        elif isinstance(s, (P.Linear, P.AddConst, P.Add, P.ReduceSum)):
            v = mdl.vars(lo, hi, True)
            var[s.out] = v
            if isinstance(s, P.Linear):
                a = linear_matrix(s, prog.shapes[s.ins[0]]).tocsr()
                for r in range(a.shape[0]):
                    sl = slice(a.indptr[r], a.indptr[r + 1])
                    mdl.row(np.r_[v[r], x[a.indices[sl]]], np.r_[1.0, -a.data[sl]], 0, 0)
            elif isinstance(s, P.AddConst):
                c = np.broadcast_to(s.const, prog.shapes[s.out]).reshape(-1).astype(np.float64)
                for r in range(len(v)):
                    mdl.row([v[r], x[r]], [1.0, -1.0], c[r], c[r])
            elif isinstance(s, P.Add):
                y2 = var[s.ins[1]]
                for r in range(len(v)):
                    mdl.row([v[r], x[r], y2[r]], [1.0, -1.0, -1.0], 0, 0)
            else:
                src = np.arange(len(x)).reshape(prog.shapes[s.ins[0]])
                groups = np.moveaxis(src, s.axes, tuple(range(-len(s.axes), 0))).reshape(len(v), -1)
                for r in range(len(v)):
                    mdl.row(np.r_[v[r], x[groups[r]]], np.r_[1.0, -np.ones(groups.shape[1])], 0, 0)
        elif isinstance(s, P.Requant):
            shape = prog.shapes[s.out]
            if s.fixed:
                m = np.broadcast_to(s.slope, shape).reshape(-1)
                n = np.broadcast_to(s.n, shape).reshape(-1)
                e_lo, e_hi = -0.5 + np.exp2(-n.astype(np.float64)), np.full(len(m), 0.5)
                y_lo = rounding_shift(l_in.astype(np.int64) * np.broadcast_to(s.m0, shape).reshape(-1), n)
                y_hi = rounding_shift(u_in.astype(np.int64) * np.broadcast_to(s.m0, shape).reshape(-1), n)
            else:
                m = np.broadcast_to(s.mult, shape).reshape(-1)
                dev = b_in.dev[i].reshape(-1) if b_in.dev is not None else 0.0
                slack = dev * m + np.maximum(np.abs(l_in), np.abs(u_in)) * m * 2.0**-50 + 2.0**-60
                e_lo, e_hi = -0.5 - slack, 0.5 + slack
                y_lo, y_hi = np.ceil(l_in * m + e_lo), np.floor(u_in * m + e_hi)
            y0 = mdl.vars(y_lo, y_hi, True)
            for r in range(len(y0)):  # acc * M + e_lo <= y0 <= acc * M + e_hi
                mdl.row([y0[r], x[r]], [1.0, -m[r]], e_lo[r], e_hi[r])
            var[s.out] = _clip_vars(mdl, y0, y_lo.astype(np.float64), y_hi.astype(np.float64), s.qmin, s.qmax)
        elif isinstance(s, P.Clamp):
            var[s.out] = _clip_vars(mdl, x, l_in, u_in, s.lo, s.hi)
        elif isinstance(s, P.MaxPool):
            win = pool_windows(s, prog.shapes[s.ins[0]])
            v = mdl.vars(lo, hi, True)
            for o in range(len(v)):
                ins = win[o][win[o] >= 0]
                best = ins[np.argmax(l_in[ins])]
                others = ins[ins != best]
                if len(others) == 0 or l_in[best] >= u_in[others].max():
                    mdl.row([v[o], x[best]], [1.0, -1.0], 0, 0)
                    continue
                ds = mdl.vars(np.zeros(len(ins)), np.ones(len(ins)), True)
                mdl.row(ds, np.ones(len(ins)), 1, 1)
                for k, src in enumerate(ins):
                    mdl.row([v[o], x[src]], [1.0, -1.0], 0, np.inf)  # z >= x_k
                    big = hi[o] - l_in[src]
                    mdl.row([v[o], x[src], ds[k]], [1.0, -1.0, big], -np.inf, big)  # d_k=1 -> z <= x_k
            var[s.out] = v
        elif isinstance(s, P.Sign):
            raise UnsupportedError("the complete check does not encode sign thresholds (binary layers)")
        else:  # pragma: no cover
            raise TypeError(type(s).__name__)
    return mdl, var


@dataclass
class PointVerdict:
    status: str  # "certified", "candidate" (a solution with a negative margin), "unknown"
    bound: float  # the smallest proven margin lower bound over the classes (-inf if none)
    levels: np.ndarray | None = None  # input levels of the candidate counterexample
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)


def solve_point(res: IntervalResult, i: int, y: int, classes: np.ndarray, time_limit: float = 10.0,
                tol: float = 1e-6) -> PointVerdict:
    """Minimize each margin ``logit_y - logit_j`` (``j`` in ``classes``) of point ``i``."""
    t0 = time.perf_counter()
    prog = res.program
    out = prog.steps[-1]
    mdl, var = build(res, i)
    acc = var[out.ins[0]]
    scale = out.scale.reshape(-1)
    dev = output_deviation(res, out)[i]
    cons = mdl.constraint()
    bounds = LPBounds(np.array(mdl.lo), np.array(mdl.hi))
    integrality = np.array(mdl.integer)
    worst = np.inf
    for j in classes:
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0:
            return PointVerdict("unknown", -np.inf, seconds=time.perf_counter() - t0, detail={"timeout": True})
        c = np.zeros(len(mdl.lo))
        c[acc[y]] += scale[y]
        c[acc[j]] -= scale[j]
        r = milp(c, integrality=integrality, bounds=bounds, constraints=cons,
                 options={"time_limit": left, "disp": False, "mip_rel_gap": 0.0})
        need = dev[y] + dev[j] + tol * (1 + abs(scale[y]) + abs(scale[j]))
        if r.x is not None and r.fun is not None and r.fun <= 0:
            first = next(s for s in prog.steps if isinstance(s, P.InputQuant))
            levels = np.rint(r.x[var[first.out]]).astype(np.int64)
            return PointVerdict("candidate", -np.inf, levels, time.perf_counter() - t0, {"class": int(j)})
        dual = getattr(r, "mip_dual_bound", None)
        proven = dual if r.status == 0 and dual is not None else (r.fun if r.status == 0 else None)
        if proven is None or not proven > need:
            return PointVerdict("unknown", -np.inf if proven is None else float(proven - need),
                                seconds=time.perf_counter() - t0, detail={"class": int(j), "status": int(r.status)})
        worst = min(worst, float(proven - need))
    return PointVerdict("certified", worst, seconds=time.perf_counter() - t0)


__all__ = ["PointVerdict", "build", "linear_matrix", "solve_point"]
