"""Projected gradient descent (Madry et al. 2018), L-inf and L2, with random start and restarts.

Used both for adversarial training and for evaluation. The model is run as given: callers put
it in eval mode so attacks never update quantizer observers; quantized twins pass gradients
through their quantizers with straight-through estimators.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .threat import ThreatModel


def _random_start(x: torch.Tensor, threat: ThreatModel, gen: torch.Generator | None) -> torch.Tensor:
    if threat.norm == "linf":
        noise = (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1) * threat.eps
    else:
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        n = noise.flatten(1).norm(dim=1).view(-1, *[1] * (x.ndim - 1))
        r = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=gen, dtype=x.dtype)
        noise = noise / n * r * threat.eps
    return threat.project(x + noise, x)


def _step(x_adv: torch.Tensor, grad: torch.Tensor, norm: str, step_size: float) -> torch.Tensor:
    if norm == "linf":
        return x_adv + step_size * grad.sign()
    n = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (grad.ndim - 1))
    return x_adv + step_size * grad / n


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int = 10,
        step_size: float | None = None, random_start: bool = True, restarts: int = 1,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted PGD maximizing cross-entropy; with restarts, keeps per point the first restart
    that misclassifies (else the last). ``step_size`` defaults to ``2.5 * eps / steps``."""
    if threat.eps == 0:
        return x.clone()
    alpha = step_size if step_size is not None else 2.5 * threat.eps / steps
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool)
    for _ in range(restarts):
        x_adv = _random_start(x, threat, generator) if random_start else x.clone()
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = threat.project(_step(x_adv.detach(), grad, threat.norm, alpha), x)
        with torch.no_grad():
            wrong = model(x_adv).argmax(1) != y
        take = ~fooled
        best[take] = x_adv.detach()[take]
        fooled |= wrong
        if bool(fooled.all()):
            break
    return best
