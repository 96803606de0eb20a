"""Projected gradient descent (Madry et al. 2018), L-inf and L2, with random start and restarts,
and FGSM (Goodfellow et al. 2015) as its one-step special case.

Used both for adversarial training (:func:`pgd`) and for evaluation (the registered ``pgd`` and
``fgsm`` attacks). The model is run as given: callers put it in eval mode so attacks never update
quantizer observers; quantized twins pass gradients through their quantizers with
straight-through estimators (BPDA).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .base import Attack, register_attack, scored_wrong
from .losses import get_loss
from .threat import ThreatModel


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               loss: str | Callable = "ce") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-point loss ``[N]``, its gradient with respect to the input, and the logits.

    The summed loss is differentiated, so each point gets its own gradient unscaled by the
    batch size (a mean would shrink gradients of large batches toward underflow)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    values = get_loss(loss)(logits, y)
    (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), grad.detach(), logits.detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int = 10,
        step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        generator: torch.Generator | None = None, loss: str = "ce") -> torch.Tensor:
    """Untargeted PGD maximizing ``loss``; with restarts, keeps per point the first restart that
    misclassifies on the input grid (else the last). ``step_size`` defaults to ``2.5 * eps / steps``."""
    if threat.eps == 0:
        return x.clone()
    alpha = step_size if step_size is not None else 2.5 * threat.eps / steps
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool)
    for _ in range(restarts):
        x_adv = threat.random_start(x, generator) if random_start else x.clone()
        for _ in range(steps):
            _, grad, _ = input_grad(model, x_adv, y, loss)
            x_adv = threat.project(x_adv + alpha * threat.normalized_step(grad), x)
        wrong = scored_wrong(model, threat, x_adv, x, y)
        take = ~fooled
        best[take] = x_adv[take]
        fooled |= wrong
        if bool(fooled.all()):
            break
    return best


@dataclass(frozen=True)
class PGDParams:
    steps: int = 20
    step_size: float | None = None  # default 2.5 * eps / steps
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"


@register_attack("pgd")
class PGD(Attack):
    Params = PGDParams

    def perturb(self, model, x, y, generator=None):
        p = self.params
        return pgd(model, x, y, self.threat, p.steps, p.step_size, p.random_start, p.restarts, generator, p.loss)


@dataclass(frozen=True)
class FGSMParams:
    loss: str = "ce"


@register_attack("fgsm")
class FGSM(Attack):
    """One full-radius step along the normalized gradient from the clean point."""

    Params = FGSMParams

    def perturb(self, model, x, y, generator=None):
        return pgd(model, x, y, self.threat, steps=1, step_size=self.threat.eps, random_start=False,
                   loss=self.params.loss)
