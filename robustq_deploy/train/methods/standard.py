"""Baselines: natural training, plain quantization-aware training, and PGD adversarial training.

* ``natural``: cross-entropy on clean inputs; float or quantized as ``[quant]`` says.
* ``qat``: the same loss, but refuses a float ``[quant]`` section (plain QAT baseline).
* ``pgd-at`` (Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial
  Attacks"): ``min_theta E max_{||delta||_inf <= eps} CE(f(x + delta), y)``, the inner max by PGD
  with ``train.attack.steps`` steps (default 10) of size ``train.attack.step_size`` (default
  ``2.5 * eps / steps``) from a uniform random start; the model is in eval mode while attacked.
  Params: ``clean_weight`` (default 0.0) mixes in the clean loss:
  ``(1 - w) * CE(adv) + w * CE(clean)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..adversary import pgd_train
from ..base import Method, StepContext, register_method


@register_method("natural")
class Natural(Method):
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return F.cross_entropy(model(x), y)


@register_method("qat")
class QAT(Natural):
    requires_quant = True


@dataclass(frozen=True)
class PGDATParams:
    clean_weight: float = 0.0

    def __post_init__(self):
        if not 0 <= self.clean_weight <= 1:
            raise ConfigError(f"train.params.clean_weight: must be in [0, 1], got {self.clean_weight!r}")


@register_method("pgd-at")
class PGDAT(Method):
    Params = PGDATParams

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x_adv = pgd_train(model, x, y, self.cfg, ctx.eps, ctx.generator)
        adv = F.cross_entropy(model(x_adv), y)
        w = self.params.clean_weight
        return adv if w == 0 else (1 - w) * adv + w * F.cross_entropy(model(x), y)
