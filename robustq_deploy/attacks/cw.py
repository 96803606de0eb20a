"""Carlini-Wagner L2 attack (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural
Networks"), untargeted.

Minimises ``||x' - x||_2^2 + c * max(z_y - max_{i != y} z_i, -kappa)`` over ``x' = box(tanh(w))``
(the tanh change of variables keeps ``x'`` inside the input box) with Adam, and binary-searches
the constant ``c`` per point: halve the interval after a success, grow ``c`` tenfold while no
success has been seen. Keeps per point the smallest adversarial perturbation found; it counts
against an L2 threat when it is no longer than ``eps`` (points never fooled return ``x``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Attack, register_attack, scored_wrong
from .losses import margin_loss
from .threat import ThreatModel

_EDGE = 1 - 1e-6  # keeps atanh finite for pixels exactly at the box edges


def cw_l2(model, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int = 100,
          binary_steps: int = 5, c_init: float = 1.0, lr: float = 0.05, kappa: float = 0.0) -> torch.Tensor:
    """The threat gives the input box and grid (success is judged on the grid); its radius is not
    used here (CW minimises the distance instead of bounding it)."""
    n = x.shape[0]
    lo, hi = threat.lo, threat.hi
    w0 = torch.atanh(((x - lo) / (hi - lo) * 2 - 1).clamp(-_EDGE, _EDGE))
    c = torch.full((n,), c_init, dtype=x.dtype)
    c_lo = torch.zeros(n, dtype=x.dtype)
    c_hi = torch.full((n,), float("inf"), dtype=x.dtype)
    best = x.clone()
    best_l2 = torch.full((n,), float("inf"), dtype=x.dtype)
    for _ in range(binary_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        success = torch.zeros(n, dtype=torch.bool)
        for _ in range(steps):
            xa = (torch.tanh(w) + 1) / 2 * (hi - lo) + lo
            z = model(xa)
            l2 = (xa - x).flatten(1).pow(2).sum(1)
            loss = (l2 + c * (-margin_loss(z, y)).clamp(min=-kappa)).sum()
            (w.grad,) = torch.autograd.grad(loss, w)  # not backward(): leave the model's .grad alone
            opt.step()
            with torch.no_grad():
                adv = z.argmax(1) != y if threat.grid is None else scored_wrong(model, threat, xa, x, y)
                dist = l2.detach().sqrt()
                better = adv & (dist < best_l2)
                best[better] = xa.detach()[better]
                best_l2[better] = dist[better]
                success |= adv
        with torch.no_grad():
            c_hi = torch.where(success, torch.minimum(c_hi, c), c_hi)
            c_lo = torch.where(success, c_lo, torch.maximum(c_lo, c))
            c = torch.where(torch.isinf(c_hi), c * 10, (c_lo + c_hi) / 2)
    return best


@dataclass(frozen=True)
class CWParams:
    steps: int = 100
    binary_steps: int = 5
    c_init: float = 1.0
    lr: float = 0.05  # the paper's 0.01 assumes thousands of steps; 100 steps need larger ones
    kappa: float = 0.0


@register_attack("cw-l2")
class CarliniWagnerL2(Attack):
    Params = CWParams
    norms = ("l2",)

    def perturb(self, model, x, y, generator=None):
        p = self.params
        adv = cw_l2(model, x, y, self.threat, p.steps, p.binary_steps, p.c_init, p.lr, p.kappa)
        return self.threat.project(adv, x)
