"""Interval bounds of every value of a :class:`~.program.Program` on an L-inf ball, exact per step.

The ball ``[x - eps, x + eps]`` clipped to the input range is mapped onto integer levels by the
graph's own QuantizeLinear (the reference kernel, applied to the float32 ends; it is monotone, so
the ends give the exact range). Then, step by step, in int64:

* :class:`~.program.Linear`: ``W (l + u) -+ |W| (u - l)``, halved: the exact range of ``W q``
  over the box (the positive and negative weight parts meet opposite ends), computed with the
  reference's exact integer products;
* requantization, clamps, max pooling and the sign threshold are monotone (the threshold maps a
  range wholly inside or outside onto one value), so their ends map to the ends;
* adds, reductions and reshapes as they are.

Each step's range is the exact range of that step over the *box* of its inputs (not of the
network: inputs of a step are correlated, which intervals forget).

QDQ graphs (``program.form == "qdq"``) are computed in float between their quantizers by the
engines, each its own way: the numpy reference sums float32 products in float64; onnxruntime
fuses them into integer QLinearConv with a float32 rescale; the compiled module into the
fixed-point rescale. Each of these stays within ``QDQ_REL`` (``2**-20``) of the exact value
times the magnitude ``|W| |q| + |b|`` (in units of the accumulator), which is what
``Bounds.dev`` carries to the next QuantizeLinear, where a level is then any rounding of
``acc * M +- dev * M``. Engines that accumulate long float32 sums (an unfused float QDQ
execution) may stray further and are not covered.

int32 values (products, adds, sums) wrap in the engines as in two's complement. Where a value's
whole range lies in one wrap period, wrapping is a constant shift (a channel whose int32 bias
saturated does this): the shift is applied and recorded in :attr:`IntervalResult.wrap` for the
linear bounds. A range that straddles a wrap boundary, or any wrap in a QDQ graph (whose
engines do not all compute in int32), makes the point's bounds unusable: such points are flagged
in :attr:`IntervalResult.overflow` and never certified.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quant.fixed_point import requantize
from . import program as P

QDQ_REL = 2.0**-20  # engine deviation of a QDQ layer, relative to its magnitude (see module docstring)
OUT_REL = 2.0**-20  # float32 rounding of the output dequantization (two roundings of 2**-24), with margin
EPS_WIDEN = 2.0**-20  # the ball's radius is widened by this fraction (see ball())
INT32 = 2**31


@dataclass
class Bounds:
    lo: np.ndarray  # int64 [N, ...]
    hi: np.ndarray
    dev: np.ndarray | None = None  # float64 [N, ...]: engine deviation in units of the value (QDQ)


@dataclass
class IntervalResult:
    program: P.Program
    bounds: dict[str, Bounds]
    mag: dict[str, np.ndarray]  # Linear step -> |W| max(|lo|, |hi|) of its input (int64 [N, out])
    overflow: np.ndarray  # bool [N]: some int32 value may wrap
    wrap: dict[str, np.ndarray]  # int32 step -> the constant its wrap adds (int64 [N, ...]), where not 0

    def margins(self, y: np.ndarray) -> np.ndarray:
        """Lower bounds of ``logit_y - logit_j`` ([N, classes], +inf at ``y``), every deviation of
        the output's float arithmetic subtracted. When the output is a linear layer (plus bias) of
        a value, the margin's weights ``s_y W_y - s_j W_j`` meet that value's box at once (Gowal et
        al.'s elision of the last layer), else the logits' bounds are subtracted."""
        out = self.program.steps[-1]
        b = self.bounds[out.ins[0]]
        n = len(y)
        rows = np.arange(n)
        s = out.scale.reshape(1, -1)
        elided = self._elided(y)
        if elided is None:
            lo, hi = b.lo.reshape(n, -1) * s, b.hi.reshape(n, -1) * s
            m = lo[rows, y][:, None] - hi
            m -= 2.0**-50 * (np.abs(lo[rows, y])[:, None] + np.abs(hi))  # float64 products and difference
        else:
            m = elided
        dev = output_deviation(self, out)
        m = m - dev[rows, y][:, None] - dev
        m[rows, y] = np.inf
        return np.where(self.overflow[:, None], -np.inf, m)

    def _elided(self, y: np.ndarray) -> np.ndarray | None:
        """Margins through the last layer with the specification folded into its weights, or None
        when the output is not ``W h (+ b)`` of a value ``h`` (or an int32 wrap sits between)."""
        prod = self.program.producer()
        out = self.program.steps[-1]
        acc, bias = out.ins[0], None
        step = prod.get(acc)
        if isinstance(step, P.AddConst):
            bias, step = step.const.reshape(-1).astype(np.float64), prod.get(step.ins[0])
        if not isinstance(step, P.Linear) or step.kind != "matmul" or any(k in self.wrap for k in (acc, step.out)):
            return None
        h = self.bounds[step.ins[0]]
        n = len(y)
        lo, hi = h.lo.reshape(n, -1).astype(np.float64), h.hi.reshape(n, -1).astype(np.float64)
        s = out.scale.reshape(-1)
        w = step.weight.astype(np.float64) * s  # [K, classes]: columns s_c W_c (float64 rounding)
        c = w[:, y].T[:, None, :] - w.T[None]  # [N, classes, K]: s_y W_y - s_j W_j
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        m = np.einsum("njk,nk->nj", c, mid) - np.einsum("njk,nk->nj", np.abs(c), rad)
        # rounding: |fl(c) - c| <= 3u (|s_y W_y| + |s_j W_j|), and the sums' gamma_K (|c| <= that sum)
        big = np.maximum(np.abs(lo), np.abs(hi))
        aw = np.abs(w).T @ big.T  # [classes, N]: sum_k |s_c W_kc| max|h_k|
        terms = aw[y, np.arange(n)][:, None] + aw.T
        if bias is not None:
            bs = bias * s
            m += bs[y][:, None] - bs[None]
            terms += np.abs(bs[y])[:, None] + np.abs(bs)[None]
        # every product and sum above is a float64 rounding: a gamma-bound of the magnitudes covers them
        k = step.weight.shape[0] + 8
        return m - 4 * k * 2.0**-53 * terms

def output_deviation(res: IntervalResult, out: P.Output) -> np.ndarray:
    """Bound on ``|logit - acc * scale|`` per class ([N, classes]): QDQ deviation and the output's
    float32 rounding."""
    b = res.bounds[out.ins[0]]
    n = len(b.lo)
    mag = np.maximum(np.abs(b.lo), np.abs(b.hi)).reshape(n, -1).astype(np.float64)
    dev = mag * OUT_REL
    if b.dev is not None:
        dev = dev + b.dev.reshape(n, -1)
    return dev * out.scale.reshape(1, -1) * (1 + 2.0**-40)


def ball(x: np.ndarray, eps: float, lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Float32 ends of the L-inf ball around ``x`` inside ``[lo, hi]``: the smallest float32 at or
    above ``x - eps'`` and the largest at or below ``x + eps'``, with ``eps' = eps * (1 + 2**-20)``
    so that a point the threat model's own float arithmetic puts on the edge is inside."""
    x = np.asarray(x, np.float64)
    e = eps * (1 + EPS_WIDEN)
    a, b = np.clip(x - e, lo, hi), np.clip(x + e, lo, hi)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    a32 = np.where(a32.astype(np.float64) < a, np.nextafter(a32, np.float32(np.inf)), a32)
    b32 = np.where(b32.astype(np.float64) > b, np.nextafter(b32, np.float32(-np.inf)), b32)
    return a32, b32


def wrap_int32(b: Bounds) -> tuple[Bounds, np.ndarray, np.ndarray]:
    """Bounds after int32 wrap-around, the shift it added (int64) and the points it is exact for
    (each element's range within one wrap period)."""
    k_lo = (b.lo + INT32) // (2 * INT32)
    k_hi = (b.hi + INT32) // (2 * INT32)
    n = len(b.lo)
    ok = (k_lo == k_hi).reshape(n, -1).all(1)
    shift = -k_lo * (2 * INT32)
    return Bounds(b.lo + shift, b.hi + shift, b.dev), shift, ok


def linear_bounds(step: P.Linear, b: Bounds) -> tuple[Bounds, np.ndarray]:
    """Exact range of ``W q`` over the box, and ``|W| max(|lo|, |hi|)``."""
    w_abs = np.abs(step.weight)
    mid = step.apply(b.lo + b.hi)
    rad = step.apply(b.hi - b.lo, w_abs)
    mag = step.apply(np.maximum(np.abs(b.lo), np.abs(b.hi)), w_abs)
    if b.dev is not None and np.any(b.dev):  # the reader only builds layers on exact integer levels
        raise ValueError("a linear step's input carries a float deviation")
    return Bounds((mid - rad) // 2, (mid + rad) // 2), mag


def requant_bounds(step: P.Requant, b: Bounds) -> Bounds:
    if step.fixed:
        return Bounds(requantize(b.lo, step.m0, step.n, 0, step.qmin, step.qmax),
                      requantize(b.hi, step.m0, step.n, 0, step.qmin, step.qmax))
    t_lo, t_hi = b.lo * step.mult, b.hi * step.mult
    slack = (b.dev if b.dev is not None else 0.0) * step.mult
    slack = slack + (np.abs(t_lo) + np.abs(t_hi)) * 2.0**-50 + 2.0**-60
    lo = np.clip(np.ceil(t_lo - slack - 0.5), step.qmin, step.qmax).astype(np.int64)
    hi = np.clip(np.floor(t_hi + slack + 0.5), step.qmin, step.qmax).astype(np.int64)
    return Bounds(lo, hi)


def sign_bounds(step: P.Sign, b: Bounds) -> Bounds:
    inside = (b.lo >= step.lo) & (b.hi <= step.hi)
    outside = (b.hi < step.lo) | (b.lo > step.hi)
    a, c = min(step.on, step.off), max(step.on, step.off)
    lo = np.where(inside, step.on, np.where(outside, step.off, a)).astype(np.int64)
    hi = np.where(inside, step.on, np.where(outside, step.off, c)).astype(np.int64)
    return Bounds(lo, hi)


def propagate(program: P.Program, q_lo: np.ndarray, q_hi: np.ndarray) -> IntervalResult:
    """Bounds of every value given the input levels' box ``[q_lo, q_hi]`` (int [N, ...])."""
    qdq = program.form == "qdq"
    bounds: dict[str, Bounds] = {}
    mag: dict[str, np.ndarray] = {}
    n = len(q_lo)
    overflow = np.zeros(n, bool)
    wrap: dict[str, np.ndarray] = {}
    for s in program.steps:
        b = bounds[s.ins[0]] if s.ins else None
        if isinstance(s, P.InputQuant):
            r = Bounds(np.asarray(q_lo, np.int64), np.asarray(q_hi, np.int64), np.zeros(q_lo.shape) if qdq else None)
        elif isinstance(s, P.Linear):
            r, mag[s.out] = linear_bounds(s, b)
            if qdq:
                r.dev = QDQ_REL * mag[s.out]
        elif isinstance(s, P.AddConst):
            r = Bounds(b.lo + s.const, b.hi + s.const, None if b.dev is None else b.dev + QDQ_REL * np.abs(s.const))
        elif isinstance(s, P.Add):
            c = bounds[s.ins[1]]
            dev = None if b.dev is None and c.dev is None else (b.dev if b.dev is not None else 0) + (
                c.dev if c.dev is not None else 0)
            r = Bounds(b.lo + c.lo, b.hi + c.hi, dev)
        elif isinstance(s, P.Requant):
            r = requant_bounds(s, b)
            if qdq:
                r.dev = np.zeros(r.lo.shape)
        elif isinstance(s, P.Clamp):
            r = Bounds(np.clip(b.lo, s.lo, s.hi).astype(np.int64), np.clip(b.hi, s.lo, s.hi).astype(np.int64), b.dev)
        elif isinstance(s, P.MaxPool):
            # the window maximum of a deviation: max pooling is 1-Lipschitz in the max norm
            r = Bounds(s.pool(b.lo), s.pool(b.hi), None if b.dev is None else s.pool(b.dev))
        elif isinstance(s, P.Reshape):
            shape = (n, *s.shape)
            r = Bounds(b.lo.reshape(shape), b.hi.reshape(shape), None if b.dev is None else b.dev.reshape(shape))
        elif isinstance(s, P.ReduceSum):
            ax = tuple(i + 1 for i in s.axes)
            r = Bounds(b.lo.sum(ax, keepdims=s.keepdims), b.hi.sum(ax, keepdims=s.keepdims),
                       None if b.dev is None else b.dev.sum(ax, keepdims=s.keepdims))
        elif isinstance(s, P.Sign):
            r = sign_bounds(s, b)
        elif isinstance(s, P.Output):
            continue
        else:  # pragma: no cover
            raise TypeError(type(s).__name__)
        if isinstance(s, (P.Linear, P.AddConst, P.Add, P.ReduceSum)):
            r, shift, ok = wrap_int32(r)
            overflow |= ~ok
            if np.any(shift):
                if qdq:
                    overflow |= shift.reshape(n, -1).any(1)
                else:
                    wrap[s.out] = shift
        bounds[s.out] = r
    return IntervalResult(program, bounds, mag, overflow, wrap)


def input_box(program: P.Program, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels of the ball around float inputs ``x`` (the graph's QuantizeLinear on its ends)."""
    q = next(s for s in program.steps if isinstance(s, P.InputQuant))
    a, b = ball(x, eps)
    return q.quantize(a), q.quantize(b)


__all__ = ["Bounds", "IntervalResult", "OUT_REL", "QDQ_REL", "ball", "input_box", "linear_bounds", "output_deviation",
           "propagate", "requant_bounds", "sign_bounds"]
