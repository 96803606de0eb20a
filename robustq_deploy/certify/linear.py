"""Linear bounds on the logit margins by back-substitution (CROWN / DeepPoly style).

For a point with label ``y`` and each other class ``j``, the margin ``s_y acc_y - s_j acc_j`` of
the output accumulator is a linear function of the last layer's values. Walking the program
backwards, every step rewrites a lower bound ``sum(lam * v) + const`` on its output ``v`` into
one on its input:

* :class:`~.program.Linear` is exact: ``lam . (W q) = (W^T lam) . q``;
* a requantization ``clamp(round(acc * M), qmin, qmax)`` is enclosed, on the input range
  ``[l, u]`` from :mod:`.interval`, between two ramps ``clip(acc * M + e, lo, hi)`` whose offset
  ``e`` is the rounding error (``[-1/2 + 2**-n, 1/2]`` for the fixed-point chain's half-up shift;
  ``[-1/2 - slack, 1/2 + slack]`` for a QDQ QuantizeLinear, slack being the engines' float
  deviation), and each ramp by a line: slope ``M`` where the clamp cannot act, CROWN's adaptive
  choice (0 or ``M``) for a half-active clamp, a chord otherwise. The line's offset is the exact
  minimum (maximum) of the ramp minus the line over ``[l, u]``, taken at its break points, so
  *any* slope gives a valid bound; a positive ``lam`` takes the lower line, a negative one the
  upper line. Where the output range is no wider than the rounding error, the constant bounds
  (slope 0) are the tighter choice and are taken. Clamps (ReLU, Clip) are the same with
  ``M = 1`` and no rounding;
* max pooling: the window input with the largest lower bound is a lower bound of the maximum;
  the maximum's upper bound is that input where it dominates the window, else the constant
  upper bound (DeepPoly);
* a sign threshold contributes its interval (no linear dependence is kept);
* at the input quantizer each level is free in its box, and the bound is ``sum min(lam * q)``.

Intermediate bounds are the intervals of :mod:`.interval` (CROWN-IBP's split: linear bounds for
the margins only), which keeps the cost at a few transposed products per margin.

Soundness in floating point: coefficients ``lam`` are float64 numbers and need not be exact; what
must hold is each inequality used, in real arithmetic, for the numbers actually computed. The
relaxation lines are valid for the computed slopes by construction (the offset is the minimum
over the break points, less a margin of ``2**-44`` of the magnitudes); the difference between
a computed product ``fl(W^T lam)`` or ``fl(lam * k)`` and the exact one is bounded by the
standard a-priori bound ``gamma_K = K u / (1 - K u)`` (``u = 2**-53``, ``K`` terms per sum)
times the magnitudes, multiplied by the largest ``|q|`` it can meet (the interval bounds), and
collected in an error term that the final bound subtracts; so are the rounding errors of the
constant sums. Integer values are exact in float64 (below ``2**53``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import program as P
from .interval import IntervalResult, output_deviation

U = 2.0**-53
LINE_SLACK = 2.0**-44
ROW_BUDGET = 1 << 24  # float64 elements of the largest coefficient array per chunk (128 MiB)


def gamma(k: int) -> float:
    """Relative error bound of a ``k``-term float64 dot product (Higham's gamma_k), doubled."""
    k = k + 2
    return 2 * k * U / (1 - k * U)


# --------------------------------------------------------------------------- relaxations


def _ramp(a: np.ndarray, m: np.ndarray, e: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.clip(a * m + e, lo, hi)


def _line(l, u, m, e, lo, hi, lower: bool, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A line below (``lower``) or above the ramp ``clip(a * m + e, lo, hi)`` on ``[l, u]``:
    slope by the module docstring's rule (0 where ``flat``), offset the exact extreme over the
    break points."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k1 = np.where(m > 0, (lo - e) / m, l)  # leaves the lower plateau
        k2 = np.where(m > 0, (hi - e) / m, u)  # reaches the upper plateau
        f_l, f_u = _ramp(l, m, e, lo, hi), _ramp(u, m, e, lo, hi)
        width = u - l
        chord = np.where(width > 0, (f_u - f_l) / width, 0.0)
        low_plateau, high_plateau = k1 > l, k2 < u
        if lower:
            adaptive = np.where(u - k1 >= k1 - l, m, 0.0)  # convex part: CROWN's choice
            both = np.where(u > k1, (f_u - lo) / (u - k1), 0.0)
        else:
            adaptive = np.where(k2 - l >= u - k2, m, 0.0)  # concave part
            both = np.where(k2 > l, (hi - f_l) / (k2 - l), 0.0)
        k = np.where(low_plateau & high_plateau, both,
                     np.where(low_plateau, adaptive if lower else chord,
                              np.where(high_plateau, chord if lower else adaptive, m)))
    k = np.where((width > 0) & (lo < hi) & np.isfinite(k) & ~flat, k, 0.0)
    k = np.maximum(k, 0.0)  # a non-decreasing ramp: a negative slope is never better
    best = None
    scale = np.abs(k) * np.maximum(np.abs(l), np.abs(u))
    for a in (l, u, np.clip(k1, l, u), np.clip(k2, l, u)):
        g = _ramp(a, m, e, lo, hi) - k * a
        best = g if best is None else (np.minimum(best, g) if lower else np.maximum(best, g))
        scale = np.maximum(scale, np.abs(g))
    margin = LINE_SLACK * (scale + 1.0)
    return k, (best - margin if lower else best + margin)


def clamp_lines(step: P.Step, res: IntervalResult, pts: np.ndarray) -> tuple[np.ndarray, ...]:
    """(k_lo, b_lo, k_hi, b_hi): lines below and above the step's output on its input range,
    for the points ``pts`` of the chunk."""
    b_in, b_out = res.bounds[step.ins[0]], res.bounds[step.out]
    l, u = b_in.lo[pts].astype(np.float64), b_in.hi[pts].astype(np.float64)
    lo, hi = b_out.lo[pts].astype(np.float64), b_out.hi[pts].astype(np.float64)
    if isinstance(step, P.Clamp):
        m, e_lo, e_hi = np.ones_like(l), 0.0, 0.0
    elif step.fixed:
        m = np.broadcast_to(step.slope, l.shape)
        e_lo, e_hi = -0.5 + np.exp2(-step.n.astype(np.float64)), 0.5
    else:
        m = np.broadcast_to(step.mult, l.shape)
        slack = (b_in.dev[pts] if b_in.dev is not None else 0.0) * m
        slack = slack + np.maximum(np.abs(l), np.abs(u)) * m * 2.0**-50 + 2.0**-60
        e_lo, e_hi = -0.5 - slack, 0.5 + slack
    e_lo = np.broadcast_to(e_lo, l.shape)
    e_hi = np.broadcast_to(e_hi, l.shape)
    # where the output range is no wider than the rounding error, the constant bounds are tighter
    flat = hi - lo <= e_hi - e_lo
    k_lo, b_lo = _line(l, u, m, e_lo, lo, hi, lower=True, flat=flat)
    k_hi, b_hi = _line(l, u, m, e_hi, lo, hi, lower=False, flat=flat)
    return k_lo, b_lo, k_hi, b_hi


# --------------------------------------------------------------------------- transposed products


def conv_transpose(lam: np.ndarray, step: P.Linear, in_shape: tuple[int, ...]) -> np.ndarray:
    """``W^T lam`` of a convolution, for ``lam`` [R, Cout, Ho, Wo]; returns [R, C, H, W]."""
    w = torch.from_numpy(step.weight.astype(np.float64))
    c, h, wd = in_shape
    top, left, bottom, right = step.pads
    full = F.conv_transpose2d(torch.from_numpy(lam), w, stride=tuple(step.strides), dilation=tuple(step.dilations),
                              groups=step.group).numpy()
    out = np.zeros((len(lam), c, h + top + bottom, wd + left + right))
    fh, fw = min(full.shape[2], out.shape[2]), min(full.shape[3], out.shape[3])
    out[:, :, :fh, :fw] = full[:, :, :fh, :fw]
    return out[:, :, top:top + h, left:left + wd]


def transpose_product(lam: np.ndarray, step: P.Linear, in_shape: tuple[int, ...]) -> np.ndarray:
    if step.kind == "conv":
        return conv_transpose(lam, step, in_shape)
    return lam @ step.weight.T.astype(np.float64)


# --------------------------------------------------------------------------- max pooling


def pool_windows(step: P.MaxPool, in_shape: tuple[int, ...]) -> np.ndarray:
    """Flat input index of every window element ([C*Ho*Wo, kh*kw]; -1 for padding)."""
    c, h, w = in_shape
    top, left, bottom, right = step.pads
    idx = np.full((c, h + top + bottom, w + left + right), -1, np.int64)
    idx[:, top:top + h, left:left + w] = np.arange(c * h * w).reshape(c, h, w)
    kh, kw = step.kernel
    sh, sw = step.strides
    ho, wo = (idx.shape[1] - kh) // sh + 1, (idx.shape[2] - kw) // sw + 1
    cols = [idx[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] for i in range(kh) for j in range(kw)]
    return np.stack(cols, -1).reshape(c * ho * wo, kh * kw)


def pool_relaxation(step: P.MaxPool, res: IntervalResult, in_shape, pts: np.ndarray):
    """Per point: the window input with the largest lower bound ([n, O] flat indices), and whether
    it dominates its window (its lower bound at least every other input's upper bound)."""
    win = pool_windows(step, in_shape)
    b = res.bounds[step.ins[0]]
    n = len(pts)
    lo = np.concatenate([b.lo[pts].reshape(n, -1).astype(np.float64), np.full((n, 1), -np.inf)], 1)
    hi = np.concatenate([b.hi[pts].reshape(n, -1).astype(np.float64), np.full((n, 1), -np.inf)], 1)
    lw, hw = lo[:, win], hi[:, win]  # padding (-1) reads the -inf column
    pos = lw.argmax(2)
    best = np.take_along_axis(lw, pos[..., None], 2)[..., 0]
    np.put_along_axis(hw, pos[..., None], -np.inf, 2)
    dominant = best >= hw.max(2)
    return win[np.arange(win.shape[0])[None, :], pos], dominant


# --------------------------------------------------------------------------- back-substitution


class _Rows:
    """Coefficients of the margins being bounded: one row per (point, class) pair."""

    def __init__(self, pts: np.ndarray):
        self.pts = pts  # chunk-local point of each row
        self.const = np.zeros(len(pts))
        self.err = np.zeros(len(pts))

    def dot(self, lam: np.ndarray, v: np.ndarray) -> None:
        """const += sum(lam * v) per row, with its rounding error."""
        prod = np.broadcast_to(lam * v, np.broadcast_shapes(np.shape(lam), np.shape(v))).reshape(len(self.pts), -1)
        self.const += prod.sum(1)
        self.err += gamma(prod.shape[1]) * np.abs(prod).sum(1)


def _broadcast(lam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(lam, shape)


def backsubstitute(res: IntervalResult, pts: np.ndarray, rows_y: np.ndarray, rows_j: np.ndarray) -> np.ndarray:
    """Lower bounds of ``logit_y - logit_j`` for the rows (point ``pts`` of ``res``, classes
    ``rows_y``, ``rows_j``)."""
    prog = res.program
    out = prog.steps[-1]
    n_rows = len(pts)
    scale = out.scale.reshape(-1)
    c = prog.num_classes
    lam0 = np.zeros((n_rows, c))
    r = np.arange(n_rows)
    lam0[r, rows_y] = scale[rows_y]
    lam0[r, rows_j] = -scale[rows_j]
    rows = _Rows(pts)
    uniq, inv = np.unique(pts, return_inverse=True)  # relaxations are per point, shared by its rows
    lam: dict[str, np.ndarray] = {out.ins[0]: lam0.reshape(n_rows, *prog.shapes[out.ins[0]])}

    def give(name: str, v: np.ndarray) -> None:
        lam[name] = lam[name] + v if name in lam else v

    for s in reversed(prog.steps[:-1]):
        if s.out not in lam:
            continue
        L = lam.pop(s.out)
        if s.out in res.wrap:  # int32 wrap-around: a constant shift over the box
            rows.dot(L, res.wrap[s.out][pts])
        b_out = res.bounds[s.out]
        if isinstance(s, P.InputQuant):
            lo, hi = b_out.lo[pts].astype(np.float64), b_out.hi[pts].astype(np.float64)
            rows.dot(1.0, np.minimum(L * lo, L * hi))
            continue
        src = s.ins[0]
        in_shape = prog.shapes[src]
        if isinstance(s, P.Linear):
            mag = res.mag[s.out][pts].reshape(n_rows, -1).astype(np.float64)
            rows.err += gamma(s.fan_out) * (np.abs(L).reshape(n_rows, -1) * mag).sum(1)
            give(src, transpose_product(L, s, in_shape))
        elif isinstance(s, P.AddConst):
            rows.dot(L, s.const.astype(np.float64))
            give(src, L)
        elif isinstance(s, P.Add):
            give(src, L)
            give(s.ins[1], L)
        elif isinstance(s, P.Reshape):
            give(src, L.reshape(n_rows, *in_shape))
        elif isinstance(s, P.ReduceSum):
            shape = L.shape if s.keepdims else tuple(np.expand_dims(L, tuple(a + 1 for a in s.axes)).shape)
            give(src, np.ascontiguousarray(_broadcast(L.reshape(shape), (n_rows, *in_shape))))
        elif isinstance(s, (P.Requant, P.Clamp)):
            k_lo, b_lo, k_hi, b_hi = (a[inv] for a in clamp_lines(s, res, uniq))
            pos = L >= 0
            k = np.where(pos, k_lo, k_hi)
            new = L * k
            b_in = res.bounds[src]
            big = np.maximum(np.abs(b_in.lo[pts]), np.abs(b_in.hi[pts])).astype(np.float64)
            rows.err += U * (np.abs(new) * big).reshape(n_rows, -1).sum(1) * (1 + 2 * U)
            rows.dot(L, np.where(pos, b_lo, b_hi))
            give(src, new)
        elif isinstance(s, P.MaxPool):
            istar, dominant = pool_relaxation(s, res, in_shape, np.arange(len(res.overflow)))
            Lf = L.reshape(n_rows, -1)
            dom = dominant[pts]
            coef = np.where((Lf >= 0) | dom, Lf, 0.0)
            rows.dot(np.where((Lf < 0) & ~dom, Lf, 0.0), b_out.hi[pts].reshape(n_rows, -1).astype(np.float64))
            size = int(np.prod(in_shape))
            flat = (r[:, None] * size + istar[pts]).reshape(-1)
            lin = np.bincount(flat, weights=coef.reshape(-1), minlength=n_rows * size)
            give(src, lin.reshape(n_rows, *in_shape))
        elif isinstance(s, P.Sign):
            lo, hi = b_out.lo[pts].astype(np.float64), b_out.hi[pts].astype(np.float64)
            rows.dot(1.0, np.minimum(L * lo, L * hi))
        else:  # pragma: no cover
            raise TypeError(type(s).__name__)
    if lam:  # pragma: no cover - every value reaches the input
        raise RuntimeError(f"back-substitution left coefficients on {sorted(lam)}")
    dev = output_deviation(res, out)
    bound = rows.const - rows.err * (1 + 2.0**-30)
    return bound - dev[pts, rows_y] - dev[pts, rows_j]


def margin_bounds(res: IntervalResult, y: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
    """Lower bounds of every margin ``logit_y - logit_j`` ([N, classes], +inf at ``y``): the better of
    the interval bound and the back-substituted one; rows where ``skip`` is True ([N, classes])
    keep the interval bound (already positive, or not worth the work)."""
    m = res.margins(y)
    todo = ~(m > 0) & ~res.overflow[:, None]
    if skip is not None:
        todo &= ~skip
    todo[np.arange(len(y)), y] = False
    pts, js = np.nonzero(todo)
    if len(pts):
        m[pts, js] = np.maximum(m[pts, js], backsubstitute(res, pts, y[pts], js))
    return m


__all__ = ["backsubstitute", "clamp_lines", "conv_transpose", "gamma", "margin_bounds", "pool_windows"]
