"""Square Attack, L-inf (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search"): a score-based attack that needs only the logits, so it
runs on the deployed module itself.

* Start: vertical stripes, each column of each channel shifted by ``+-eps``.
* Iteration ``i``: a random ``s x s`` window (``s = round(sqrt(p * H * W))``) gets a new
  ``+-eps`` value per channel; the candidate is kept when it lowers the margin
  ``z_y - max_{i != y} z_i``. Candidates that leave the window unchanged are redrawn.
* ``p`` follows the paper's schedule: ``p_init`` halved after 10, 50, 200, 500, 1000, 2000, 4000,
  6000 and 8000 iterations of a 10000-iteration budget (rescaled to the given budget).
  ``p_init`` defaults to 0.8 as in AutoAttack's standard version.

Every query goes through the threat model's input grid (uint8 pixels), so the black box only ever
sees inputs the device can receive; all points still unfooled are queried in one batch per
iteration, and a point stops being queried once misclassified.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Attack, register_attack
from .losses import margin_loss

# (iteration out of 10000 after which it applies, divisor of p_init)
_SCHEDULE = ((10, 2), (50, 4), (200, 8), (500, 16), (1000, 32), (2000, 64), (4000, 128), (6000, 256), (8000, 512))
_REDRAWS = 10  # bound on redrawing an unchanged window (none may exist when eps is below the grid)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it`` of ``n_iters`` (the paper's piecewise schedule)."""
    i = int(it / n_iters * 10000)
    div = 1
    for start, d in _SCHEDULE:
        if i > start:
            div = d
    return p_init / div


def square_linf(model, x: torch.Tensor, y: torch.Tensor, threat, queries: int = 1000, p_init: float = 0.8,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Runs at most ``queries`` model calls per point; returns the best point found per point."""
    n, c, h, w = x.shape
    eps = threat.eps

    def signs(*shape):
        return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(x.dtype) * eps

    def place(cand, ref):
        return threat.to_grid(threat.project(cand, ref), ref)

    with torch.no_grad():
        best = place(x + signs(n, c, 1, w), x)
        margin = -margin_loss(model(best), y)  # > 0 while correctly classified
        for it in range(queries - 1):
            act = (margin > 0).nonzero().squeeze(1)
            if len(act) == 0:
                break
            xa, ba = x[act], best[act]
            deltas = ba - xa
            p = p_selection(p_init, it, queries)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1)
            r0 = int(torch.randint(0, h - s, (1,), generator=generator))
            c0 = int(torch.randint(0, w - s, (1,), generator=generator))
            win = (slice(None), slice(None), slice(r0, r0 + s), slice(c0, c0 + s))
            todo = torch.ones(len(act), dtype=torch.bool)
            cand = None
            for _ in range(_REDRAWS):
                deltas[win] = torch.where(todo.view(-1, 1, 1, 1), signs(len(act), c, 1, 1), deltas[win])
                if cand is None:
                    cand = place(xa + deltas, xa)
                else:  # only the redrawn rows change
                    rows = todo.nonzero().squeeze(1)
                    cand[rows] = place(xa[rows] + deltas[rows], xa[rows])
                todo = todo & ((cand[win] - ba[win]).abs().flatten(1).amax(1) < 1e-7)
                if not bool(todo.any()):
                    break
            new_margin = -margin_loss(model(cand), y[act])
            improved = new_margin < margin[act]
            margin[act] = torch.where(improved, new_margin, margin[act])
            best[act] = torch.where(improved.view(-1, 1, 1, 1), cand, ba)
    return best


@dataclass(frozen=True)
class SquareParams:
    queries: int = 1000
    p_init: float = 0.8


@register_attack("square")
class Square(Attack):
    Params = SquareParams
    access = "query"
    norms = ("linf",)

    def perturb(self, model, x, y, generator=None):
        if self.threat.eps == 0:
            return x.clone()
        return square_linf(model, x, y, self.threat, self.params.queries, self.params.p_init, generator)
