"""Adversarial examples for training: L-inf sign-gradient steps with random starts.

Training needs more than an evaluation attack: per-example radii and step sizes (ODG-Q's
domains), a given starting perturbation (replayed adversaries), a loss other than
cross-entropy (TRADES maximizes a KL divergence), random draws from the run's seeded
generator on whatever device the model is on, and no final scoring forward. Evaluation uses
:mod:`robustq_deploy.attacks`. Examples are generated on the bare module (outside DDP's gradient
synchronisation) in eval mode, so quantizer observers never see adversarial batches.

Named adversaries (``ADVERSARIES``: ``none``, ``fgsm-rs``, ``pgd``) let methods that combine a
regularizer with adversarial training (dq, binary-relax, lwq's fine-tuning) pick one by name.
To add one, write ``fn(model, x, y, cfg, eps, gen) -> x_adv`` and add it to the table.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..registry import registry_of
from .distributed import unwrap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Radius = float | torch.Tensor  # a number, or one value per example shaped [N, 1, 1, 1]


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The bare module in eval mode for the duration of an attack; the mode is restored after."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def uniform_noise(x: torch.Tensor, eps: Radius, gen: torch.Generator) -> torch.Tensor:
    """``U(-eps, eps)`` noise shaped like ``x``, drawn on the CPU generator (reproducible on any device)."""
    noise = (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1).to(x.device)
    return noise * eps


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: Radius) -> torch.Tensor:
    """Nearest point of the L-inf ball of radius ``eps`` around ``x`` inside the [0, 1] box."""
    d = x_adv - x
    d = torch.clamp(d, min=-eps, max=eps) if isinstance(eps, torch.Tensor) else d.clamp(-eps, eps)
    return (x + d).clamp(0.0, 1.0)


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn = F.cross_entropy) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(model(x), y), x)
    return g


def sign_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, eps: Radius,
               alpha: Radius, steps: int, loss_fn: LossFn = F.cross_entropy) -> torch.Tensor:
    """``steps`` projected sign-gradient ascent steps of size ``alpha`` from ``start`` (a point
    inside the ball); ``model`` should already be in attack mode. Returns a detached point."""
    x_adv = start.detach()
    for _ in range(steps):
        g = input_grad(model, x_adv, y, loss_fn)
        x_adv = project(x_adv.detach() + alpha * g.sign(), x, eps)
    return x_adv.detach()


def pgd_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
              gen: torch.Generator) -> torch.Tensor:
    """Madry's PGD with ``cfg.attack`` (steps, step size ``2.5 * eps / steps`` unless set,
    uniform random start); the draws and arithmetic match :func:`robustq_deploy.attacks.pgd`."""
    a = cfg.attack
    alpha = a.step_size if a.step_size is not None else 2.5 * eps / a.steps
    if eps == 0:
        return x.clone()
    with attack_mode(model) as net:
        start = project(x + uniform_noise(x, eps, gen), x, eps) if a.random_start else x
        return sign_steps(net, x, y, start, eps, alpha, a.steps)


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Radius, alpha: Radius,
            gen: torch.Generator) -> torch.Tensor:
    """Fast adversarial training's example (Wong et al. 2020): ``delta ~ U(-eps, eps)``, one
    sign step of size ``alpha``, projected back to the ball and the box."""
    with attack_mode(model) as net:
        start = project(x + uniform_noise(x, eps, gen), x, eps)
        return sign_steps(net, x, y, start, eps, alpha, 1)


ADV_FGSM_ALPHA = 1.25  # Wong et al.'s step size, in units of eps


def _none(model, x, y, cfg, eps, gen):
    return None


def _fgsm_rs(model, x, y, cfg, eps, gen):
    return fgsm_rs(model, x, y, eps, ADV_FGSM_ALPHA * eps, gen) if eps > 0 else x.clone()


ADVERSARIES = registry_of({"none": _none, "fgsm-rs": _fgsm_rs, "pgd": pgd_train}, "adversary")


def check_adversary(name: str, key: str) -> None:
    ADVERSARIES.get(name, key=f"train.params.{key}")


def adversarial(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
                gen: torch.Generator) -> torch.Tensor | None:
    """Examples of the named adversary (None for ``none``)."""
    return ADVERSARIES[name](model, x, y, cfg, eps, gen)
