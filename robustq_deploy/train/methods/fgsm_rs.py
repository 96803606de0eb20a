"""Fast adversarial training with a random start (Wong, Rice and Kolter 2020, "Fast is better
than free: Revisiting adversarial training").

Per batch::

    delta_0 ~ U(-eps, eps)
    delta   = clip_[-eps, eps](delta_0 + alpha * sign(grad_x CE(f(x + delta_0), y)))
    loss    = CE(f(clip_[0,1](x + delta)), y)

One gradient of the input per step (about twice the cost of natural training). The example is
generated with the model in eval mode, like every training attack here.

Params: ``alpha`` (default 1.25), the step size in units of eps (``1.25 * eps``, the paper's
setting; 0.375 for MNIST at eps 0.3).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..adversary import ADV_FGSM_ALPHA, fgsm_rs
from ..base import Method, StepContext, register_method


@dataclass(frozen=True)
class FGSMRSParams:
    alpha: float = ADV_FGSM_ALPHA

    def __post_init__(self):
        if self.alpha <= 0:
            raise ConfigError(f"train.params.alpha: must be positive, got {self.alpha!r}")


@register_method("fgsm-rs")
class FGSMRS(Method):
    Params = FGSMRSParams

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x_adv = fgsm_rs(model, x, y, ctx.eps, self.params.alpha * ctx.eps, ctx.generator)
        return F.cross_entropy(model(x_adv), y)
