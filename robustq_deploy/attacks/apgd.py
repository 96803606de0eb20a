"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Algorithm 1), with the cross-entropy (``apgd-ce``) and the
Difference of Logits Ratio (``apgd-dlr``) losses, and targeted APGD (``apgd-t``, AutoAttack's
APGD-T: the targeted DLR loss toward each of the ``targets`` classes with the highest clean
logits after the top one, in turn, on the points still robust), L-inf and L2.

Per point, starting from step size ``eta = 2 * eps``:

* ``z = P(x_k + eta * step(grad))`` and the momentum update
  ``x_{k+1} = P(x_k + alpha * (z - x_k) + (1 - alpha) * (x_k - x_{k-1}))``, ``alpha = 0.75``
  (plain step at the first iteration);
* at checkpoints ``w_j`` (the first after ``0.22 * N`` iterations, then intervals shrinking by
  ``0.03 * N`` down to ``0.06 * N``) the step size halves and the iterate restarts from the best
  point so far (with the momentum reset) when either (1) the loss increased in at most ``rho = 0.75`` of the steps since the
  last checkpoint, or (2) the step size was not reduced at the last checkpoint and the best loss
  has not improved since.

Points stop being attacked once misclassified on the input grid (a continuous iterate that is
barely misclassified often turns correct once rounded to uint8 pixels, so it is not a success
yet); the output is the first such iterate, or the highest-loss point found for points never fooled (a better seed for transfer to the
deployed model than an arbitrary last iterate).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .base import Attack, register_attack, scored_wrong
from .losses import targeted_dlr
from .pgd import input_grad
from .threat import per_point

ALPHA = 0.75  # momentum weight of the new step
RHO = 0.75  # required fraction of loss-increasing steps between checkpoints


def checkpoint_intervals(n_iter: int) -> list[int]:
    """Iterations between successive checkpoints: ``0.22 N``, then shrinking by ``0.03 N`` to
    at least ``0.06 N`` (each at least 1), as the reference implementation rounds them."""
    first = max(int(0.22 * n_iter), 1)
    shrink = max(int(0.03 * n_iter), 1)
    floor = max(int(0.06 * n_iter), 1)
    out, k, total = [], first, 0
    while total + k <= n_iter:
        out.append(k)
        total += k
        k = max(k - shrink, floor)
    return out


def apgd(model, x: torch.Tensor, y: torch.Tensor, threat, steps: int = 100, loss: str = "ce",
         random_start: bool = True, generator: torch.Generator | None = None,
         target: torch.Tensor | None = None) -> torch.Tensor:
    """One run of APGD; see the module docstring. With ``target`` (a class per point) the loss is
    the targeted DLR toward it (``loss`` is then ignored)."""
    n = x.shape[0]
    x_cur = threat.random_start(x, generator) if random_start else x.clone()
    eta = torch.full((n,), 2.0 * threat.eps, dtype=x.dtype)
    loss_cur = torch.zeros(n, dtype=x.dtype)
    grad = torch.zeros_like(x)
    active = torch.ones(n, dtype=torch.bool)

    def evaluate(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Loss and gradient at ``points[idx]`` into ``loss_cur``/``grad``; returns who is fooled
        (on the input grid, where the point will be scored)."""
        objective = loss if target is None else targeted_dlr(target[idx])
        li, gi, logits = input_grad(model, points[idx], y[idx], objective)
        loss_cur[idx] = li
        grad[idx] = gi
        if threat.grid is None:
            return logits.argmax(1) != y[idx]
        return scored_wrong(model, threat, points[idx], x[idx], y[idx])

    result = x_cur.clone()
    all_idx = torch.arange(n)
    fooled = evaluate(x_cur, all_idx)
    result[fooled] = x_cur[fooled]
    active &= ~fooled
    x_best, loss_best, grad_best = x_cur.clone(), loss_cur.clone(), grad.clone()
    x_prev = x_cur.clone()
    increases = torch.zeros(n)
    reduced_last = torch.ones(n, dtype=torch.bool)  # no improvement check at the first checkpoint
    loss_best_last = loss_best.clone()
    intervals = checkpoint_intervals(steps)
    next_check, since_check = (intervals.pop(0) if intervals else steps + 1), 0
    for it in range(steps):
        if not bool(active.any()):
            break
        a = ALPHA if it > 0 else 1.0
        eta_v = per_point(eta, x.ndim)
        z = threat.project(x_cur + eta_v * threat.normalized_step(grad), x)
        x_new = threat.project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), x)
        x_prev = x_cur
        x_cur = torch.where(per_point(active, x.ndim), x_new, x_cur)
        idx = active.nonzero().squeeze(1)
        loss_old = loss_cur.clone()
        fooled = evaluate(x_cur, idx)
        hit = idx[fooled]
        result[hit] = x_cur[hit]
        active[hit] = False
        increases += (loss_cur > loss_old).float()
        better = loss_cur > loss_best
        x_best[better], loss_best[better], grad_best[better] = x_cur[better], loss_cur[better], grad[better]
        since_check += 1
        if since_check == next_check:
            cond1 = increases <= next_check * RHO
            cond2 = ~reduced_last & (loss_best_last >= loss_best)
            halve = (cond1 | cond2) & active
            eta[halve] /= 2.0
            x_cur[halve], grad[halve] = x_best[halve], grad_best[halve]
            x_prev = torch.where(per_point(halve, x.ndim), x_cur, x_prev)  # restart: no momentum
            reduced_last = halve
            loss_best_last = loss_best.clone()
            increases.zero_()
            since_check = 0
            next_check = intervals.pop(0) if intervals else max(int(0.06 * steps), 1)
    still = active.clone()
    result[still] = x_best[still]
    return result


@dataclass(frozen=True)
class APGDParams:
    steps: int = 100
    restarts: int = 1
    random_start: bool = True


class _APGD(Attack):
    Params = APGDParams
    loss = "ce"

    def perturb(self, model, x, y, generator=None):
        if self.threat.eps == 0:
            return x.clone()
        best = x.clone()
        todo = torch.ones(x.shape[0], dtype=torch.bool)
        for _ in range(self.params.restarts):
            idx = todo.nonzero().squeeze(1)
            adv = apgd(model, x[idx], y[idx], self.threat, self.params.steps, self.loss,
                       self.params.random_start, generator)
            best[idx] = adv
            todo[idx] = ~scored_wrong(model, self.threat, adv, x[idx], y[idx])
            if not bool(todo.any()):
                break
        return best


@register_attack("apgd-ce")
class APGDCE(_APGD):
    loss = "ce"


@register_attack("apgd-dlr")
class APGDDLR(_APGD):
    loss = "dlr"


@dataclass(frozen=True)
class APGDTParams:
    steps: int = 100
    restarts: int = 1  # per target class
    targets: int = 9  # target classes, in order of the clean logits (AutoAttack's standard: 9)
    random_start: bool = True


@register_attack("apgd-t")
class APGDT(Attack):
    """Targeted APGD with the targeted DLR loss (AutoAttack's ``apgd-t``)."""

    Params = APGDTParams

    def __init__(self, threat, params):
        if params.targets < 1:
            raise ConfigError(f"verify.attack_params.apgd-t.targets: must be >= 1, got {params.targets}")
        super().__init__(threat, params)

    def perturb(self, model, x, y, generator=None):
        if self.threat.eps == 0 or len(x) == 0:
            return x.clone()
        with torch.no_grad():
            order = model(x).sort(dim=1).indices  # ascending: the last column is the top class
        best = x.clone()
        todo = torch.ones(x.shape[0], dtype=torch.bool)
        for k in range(2, min(self.params.targets, order.shape[1] - 1) + 2):
            target = order[:, -k]
            for _ in range(self.params.restarts):
                idx = todo.nonzero().squeeze(1)
                adv = apgd(model, x[idx], y[idx], self.threat, self.params.steps, "dlr", self.params.random_start,
                           generator, target=target[idx])
                best[idx] = adv
                todo[idx] = ~scored_wrong(model, self.threat, adv, x[idx], y[idx])
                if not bool(todo.any()):
                    return best
        return best
