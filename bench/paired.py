"""Paired statistics for comparing training methods on the same test points.

Two arms (say ODG-Q and PGD-AT) are attacked on the same test points, so their per-point outcomes
(robust or broken) are paired: treating the two accuracies as independent samples throws that
pairing away and overstates the noise of a small difference, while ignoring seed-to-seed variance
understates it. Here:

* :func:`mcnemar`: the exact McNemar test on one seed of each arm (two-sided binomial test on the
  discordant points);
* :func:`paired_bootstrap`: the difference of mean accuracies of two arms with several seeds each,
  and its 95% interval, resampling test points (the same points for both arms) and each arm's seeds;
* :func:`verdict`: a claim judged against a margin stated in advance: superiority (``a`` beats
  ``b`` by more than ``margin``), non-inferiority (``a`` is at most ``margin`` worse than ``b``),
  and "untestable in this regime" when both arms sit at a floor or a ceiling, where no method can
  show a difference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb

import numpy as np

FLOOR = 0.02  # both arms at or below this accuracy: nothing left to compare
CEILING = 0.98  # both at or above: the same


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Exact two-sided McNemar test of paired boolean outcomes ``a``, ``b`` (same points).

    ``only_a``: points ``a`` gets right and ``b`` wrong; ``only_b`` the reverse. Under the null
    hypothesis each discordant point is a fair coin; the p-value is the two-sided binomial tail."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same points: {a.shape} vs {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    k = min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"only_a": only_a, "only_b": only_b, "p_value": p, "diff": (only_a - only_b) / a.size}


@dataclass(frozen=True)
class Paired:
    """Difference ``mean(a) - mean(b)`` of two arms' accuracies and its 95% bootstrap interval."""

    acc_a: float
    acc_b: float
    diff: float
    low: float
    high: float
    seeds_a: int
    seeds_b: int
    points: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> Paired:
    """``a``: [seeds_a, points] outcomes of arm a (one row per training seed), ``b`` likewise, on
    the same points in the same order. Each draw resamples the points (the same indices for both
    arms, which keeps the pairing) and, independently, each arm's seeds."""
    a = np.atleast_2d(np.asarray(a, float))
    b = np.atleast_2d(np.asarray(b, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired outcomes need the same points: {a.shape[1]} vs {b.shape[1]}")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    diffs = np.empty(draws)
    for i in range(draws):
        pts = rng.integers(0, n, n)
        sa = rng.integers(0, a.shape[0], a.shape[0])
        sb = rng.integers(0, b.shape[0], b.shape[0])
        diffs[i] = a[np.ix_(sa, pts)].mean() - b[np.ix_(sb, pts)].mean()
    low, high = np.quantile(diffs, [0.025, 0.975])
    return Paired(float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), float(low), float(high),
                  a.shape[0], b.shape[0], n)


def verdict(p: Paired, claim: str, margin: float, floor: float = FLOOR, ceiling: float = CEILING) -> str:
    """Judge ``claim`` about arm a against arm b with the 95% interval of ``p``.

    * ``"superior"``: a beats b by more than ``margin``: reproduced if the interval lies above
      ``margin``, refuted if it lies at or below it (an interval of zero width at ``margin``, two
      arms equal on every point and seed, shows no improvement at all); ``margin`` may be 0 (any
      improvement);
    * ``"non-inferior"``: a is no more than ``margin`` below b: reproduced if the interval's low end
      is above ``-margin``, refuted if its high end is below ``-margin``;
    * ``"inferior"``: a is worse than b by more than ``margin`` (e.g. quantization lowers
      robustness): reproduced if the interval lies below ``-margin``, refuted if at or above it.
    Otherwise "inconclusive"; "untestable in this regime" when both arms are at the floor or at
    the ceiling.
    """
    if max(p.acc_a, p.acc_b) <= floor:
        return f"untestable in this regime (both at or below {floor:.0%})"
    if min(p.acc_a, p.acc_b) >= ceiling:
        return f"untestable in this regime (both at or above {ceiling:.0%})"
    if claim == "superior":
        if p.low > margin:
            return "reproduced"
        if p.high <= margin:
            return "refuted"
    elif claim == "non-inferior":
        if p.low > -margin:
            return "reproduced"
        if p.high < -margin:
            return "refuted"
    elif claim == "inferior":
        if p.high < -margin:
            return "reproduced"
        if p.low >= -margin:
            return "refuted"
    else:
        raise ValueError(f"unknown claim {claim!r}; choose superior, non-inferior or inferior")
    return "inconclusive"


__all__ = ["CEILING", "FLOOR", "Paired", "mcnemar", "paired_bootstrap", "verdict"]
