"""RayS (Chen & Gu 2020, "RayS: a ray searching method for hard-label adversarial attack"), L-inf:
a decision-based attack that needs only the predicted label, for engines that return nothing else.

The search space is the set of L-inf rays ``x + r * d`` with ``d`` a sign vector. Per point it
keeps the best direction ``d`` and the smallest radius ``r`` at which ``x + r * d`` (clipped to
the input box) is misclassified. Each step flips the signs of one block of ``d``: blocks halve in
size level by level (the whole image, then halves, quarters, ...). A flip is kept when the new
direction is already misclassified at the current best radius (one query), after which a binary
search finds its own boundary radius. A point stops once its radius is within ``eps``.

On the uint8 input grid the radii searched are multiples of the grid step, so every queried
image lies on the grid (pixels ``x`` are on it) and the binary search takes at most 8 queries;
without a grid it stops at a relative tolerance of 1/1000. Queries are counted per point; each
point gets at most ``queries`` of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Attack, register_attack
from .threat import per_point

_TOL = 1e-3  # binary-search resolution without an input grid, as a fraction of the box width


def rays_linf(model, x: torch.Tensor, y: torch.Tensor, threat, queries: int = 1000) -> torch.Tensor:
    """Adversarial points within ``threat.eps`` where found (else the best ray at radius ``eps``)."""
    n = x.shape[0]
    flat = x[0].numel()
    width = threat.hi - threat.lo
    step = threat.grid if threat.grid is not None else width * _TOL
    r_max = int(math.ceil(width / step))  # radii in units of the step: 1..r_max
    r_eps = int(math.floor(threat.eps / step + 1e-6))
    used = torch.zeros(n, dtype=torch.long)

    def at(idx: torch.Tensor, d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        pts = (x[idx] + per_point(r.to(x.dtype) * step, x.ndim) * d.view_as(x[idx])).clamp(threat.lo, threat.hi)
        return pts

    def wrong(idx: torch.Tensor, d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        used[idx] += 1
        with torch.no_grad():
            return model(at(idx, d, r)).argmax(1) != y[idx]

    def search(idx: torch.Tensor, d: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Smallest radius in (0, hi] at which each ray is misclassified (it is at ``hi``)."""
        lo = torch.zeros_like(hi)
        while True:
            open_ = (hi - lo) > 1
            if not bool(open_.any()):
                return hi
            k = open_.nonzero().squeeze(1)
            mid = (lo[k] + hi[k]) // 2
            w = wrong(idx[k], d[k], mid)
            hi[k] = torch.where(w, mid, hi[k])
            lo[k] = torch.where(w, lo[k], mid)

    d = torch.ones(n, flat, dtype=x.dtype)
    best = torch.full((n,), r_max + 1, dtype=torch.long)  # r_max + 1: no misclassified radius known
    all_idx = torch.arange(n)
    hit = wrong(all_idx, d, torch.full((n,), r_max, dtype=torch.long))
    if bool(hit.any()):
        k = all_idx[hit]
        best[k] = search(k, d[k], torch.full((len(k),), r_max, dtype=torch.long))
    level, block = 0, 0
    while True:
        active = (best > r_eps) & (used < queries)
        if not bool(active.any()):
            break
        nblocks = 2 ** level
        size = math.ceil(flat / nblocks)
        start, end = block * size, min(flat, (block + 1) * size)
        idx = active.nonzero().squeeze(1)
        cand = d[idx].clone()
        cand[:, start:end] *= -1
        r_try = torch.clamp(best[idx], max=r_max)
        w = wrong(idx, cand, r_try)
        if bool(w.any()):
            k = idx[w]
            d[k] = cand[w]
            best[k] = search(k, cand[w], r_try[w].clone())
        block += 1
        if block == nblocks or end >= flat:
            level, block = (level + 1, 0) if size > 1 else (level, 0)
    out = at(all_idx, d, torch.clamp(best, max=r_eps))
    return out


@dataclass(frozen=True)
class RaySParams:
    queries: int = 1000


@register_attack("rays")
class RayS(Attack):
    """Decision-based (label-only) L-inf attack; see the module docstring."""

    Params = RaySParams
    access = "query"
    outputs = "labels"
    norms = ("linf",)

    def perturb(self, model, x, y, generator=None):
        if self.threat.eps == 0 or len(x) == 0:
            return x.clone()
        return rays_linf(model, x, y, self.threat, self.params.queries)
