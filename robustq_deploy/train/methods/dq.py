"""Defensive Quantization (Lin, Gan and Han, ICLR 2019, "Defensive Quantization: When
Efficiency Meets Robustness").

What the paper says: plainly quantized networks (low-bit activations) are less robust than
their float counterparts, because each quantizer can turn a small input perturbation into a
whole quantization step and the perturbation grows layer by layer (the "error amplification
effect", seen in the relative distance ``||q_l(x') - q_l(x)|| / ||q_l(x)||`` at the quantizer
outputs); keeping every layer's Lipschitz constant near 1 stops that growth, so the quantized
model becomes more robust than the plainly quantized one, and even than the float model, without
losing clean accuracy; the regularizer helps the quantized model more than the float one.

What the code does: trains with an orthogonality regularizer on every layer::

    loss = CE(f(x_a), y) + beta * sum_l ||W_l^T W_l - I||_F^2

over every conv and linear weight ``W_l`` (latent float weights; a conv weight reshaped to
``[out, in * k * k]``), computed by :func:`robustq_deploy.quant.primitives.gram_penalty`.
``x_a`` is ``x`` (the paper's setting: natural training) or an adversarial example when combined
with adversarial training (``adv = "fgsm-rs"`` or ``"pgd"``, see :mod:`..adversary`). The model
may be float (the regularizer alone: Lipschitz control without quantization) or quantized.

Params: ``beta`` (default 3e-4; the strength of the regularizer), ``adv`` (default ``"none"``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...quant import primitives as P, quant_layers
from ..adversary import adversarial, check_adversary
from ..base import Method, StepContext, register_method
from ..distributed import unwrap


@dataclass(frozen=True)
class DQParams:
    beta: float = 3e-4
    adv: str = "none"

    def __post_init__(self):
        if self.beta < 0:
            raise ConfigError(f"train.params.beta: must be >= 0, got {self.beta!r}")
        check_adversary(self.adv, "adv")


def orthogonality(model: nn.Module) -> torch.Tensor:
    """``sum_l ||W_l^T W_l - I||_F^2`` over the conv and linear layers of ``model``."""
    return sum(P.gram_penalty(layer.weight) for _, layer in quant_layers(unwrap(model)))


@register_method("dq")
class DefensiveQuantization(Method):
    Params = DQParams

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x_adv = adversarial(self.params.adv, model, x, y, self.cfg, ctx.eps, ctx.generator)
        ce = F.cross_entropy(model(x if x_adv is None else x_adv), y)
        return ce + self.params.beta * orthogonality(model)

    def finish(self, model: nn.Module) -> dict:
        with torch.no_grad():
            return {"orthogonality": float(orthogonality(model))}
