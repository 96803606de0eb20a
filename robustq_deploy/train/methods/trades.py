"""TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and Accuracy").

Objective per batch::

    CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x'))
    x' = argmax_{||x' - x||_inf <= eps} KL(softmax f(x) || softmax f(x'))

The inner maximum is PGD on the KL term from ``x + 0.001 * N(0, I)`` (the paper's start), with
``train.attack.steps`` steps (default 10) of ``train.attack.step_size`` (default
``2.5 * eps / steps``), the model in eval mode and the clean distribution held fixed. The KL is
averaged over the batch (``batchmean``, the official code's ``sum / batch_size``).

Params: ``beta`` (default 6.0, the paper's choice for MNIST and CIFAR-10).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..adversary import attack_mode, project, sign_steps
from ..base import Method, StepContext, register_method

START_STD = 0.001


@dataclass(frozen=True)
class TradesParams:
    beta: float = 6.0

    def __post_init__(self):
        if self.beta < 0:
            raise ConfigError(f"train.params.beta: must be >= 0, got {self.beta!r}")


def kl_to(p_clean: torch.Tensor):
    """Loss ``KL(p_clean || softmax(logits))`` averaged over the batch, for the attack."""
    def loss(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="batchmean")
    return loss


@register_method("trades")
class Trades(Method):
    Params = TradesParams

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        a = self.cfg.attack
        eps = ctx.eps
        alpha = a.step_size if a.step_size is not None else 2.5 * eps / a.steps
        with attack_mode(model) as net:
            with torch.no_grad():
                p_clean = F.softmax(net(x), dim=1)
            noise = torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype).to(x.device) * START_STD
            start = project(x + noise, x, eps)
            return sign_steps(net, x, y, start, eps, alpha, a.steps, kl_to(p_clean))

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x_adv = self.adversarial(model, x, y, ctx)
        logits = model(torch.cat([x, x_adv]))
        clean, adv = logits[:len(x)], logits[len(x):]
        robust = F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        return F.cross_entropy(clean, y) + self.params.beta * robust
