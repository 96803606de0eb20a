"""BinaryRelax (Yin, Zhang, Lyu, Osher, Qi and Xin 2018, "BinaryRelax: A Relaxation Approach for
Training Deep Neural Networks with Quantized Weights"), with a robustness / sparsity trade-off.

Relaxed quantization: during training every layer computes with the relaxed weight ::

    W_relaxed = (eta * Q(W) + W) / (1 + eta)            eta_e = eta0 * growth ** e

(the minimizer of ``||X - W||^2 + eta * ||X - Q(W)||^2``; ``Q`` the layer's weight quantizer:
ternary, 4-bit, any width), the gradient reaching the float weights ``W`` straight through ``Q``.
``eta`` grows geometrically each epoch, and the last ``hard_epochs`` epochs train with the hard
quantization ``Q(W)`` (eta = infinity), which is also what the finished model computes.

Objective per batch (the trade-off loss)::

    CE(f(x), y) + lambda_adv * CE(f(x_adv), y) + lambda_gl * sum_l sum_c sqrt(n_c) ||W_l[c]||_2

``x_adv`` from the named adversary ``adv`` (default FGSM with random start); the channel group
lasso runs over the output channels of every conv / linear layer but the classifier. At the end,
channels whose L2 norm is below ``prune_threshold`` times the largest channel norm of their
layer are set to zero, and the checkpoint metrics report the channel sparsity: the fraction of
output channels whose quantized weights are all zero (overall and per layer).

Params (defaults): ``eta0`` (1.0), ``eta_growth`` (2.0 per epoch), ``hard_epochs`` (1),
``lambda_adv`` (1.0), ``lambda_gl`` (1e-5), ``adv`` ("fgsm-rs"), ``prune_threshold`` (0.05).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...quant import primitives as P, quant_layers
from ..adversary import adversarial, check_adversary
from ..base import Method, StepContext, register_method
from ..distributed import unwrap


@dataclass(frozen=True)
class BinaryRelaxParams:
    eta0: float = 1.0
    eta_growth: float = 2.0
    hard_epochs: int = 1
    lambda_adv: float = 1.0
    lambda_gl: float = 1e-5
    adv: str = "fgsm-rs"
    prune_threshold: float = 0.05

    def __post_init__(self):
        problems = []
        if self.eta0 <= 0 or self.eta_growth < 1:
            problems.append("need eta0 > 0 and eta_growth >= 1")
        if self.hard_epochs < 0:
            problems.append("hard_epochs must be >= 0")
        if self.lambda_adv < 0 or self.lambda_gl < 0:
            problems.append("lambda_adv and lambda_gl must be >= 0")
        if not 0 <= self.prune_threshold < 1:
            problems.append("prune_threshold must be in [0, 1)")
        if problems:
            raise ConfigError(f"train.params: {'; '.join(problems)}")
        check_adversary(self.adv, "adv")


def grouped_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers whose output channels the group lasso acts on: all conv / linear but the last."""
    return quant_layers(unwrap(model))[:-1]


def channel_sparsity(model: nn.Module) -> dict[str, Any]:
    """Fraction of output channels whose quantized weights are all zero, overall and per layer."""
    per_layer, zero, total = {}, 0, 0
    for name, layer in grouped_layers(model):
        w = layer.weight.detach()
        levels = layer.w_q.levels_and_scale(w)[0] if layer.w_q.enabled else w
        dead = int((levels.reshape(len(w), -1) == 0).all(dim=1).sum())
        per_layer[name] = dead / len(w)
        zero, total = zero + dead, total + len(w)
    return {"channel_sparsity": zero / max(total, 1), "channel_sparsity_per_layer": per_layer}


def set_relaxation(model: nn.Module, eta: float | None) -> None:
    for _, layer in quant_layers(unwrap(model)):
        layer.w_q.relax_eta = eta


@register_method("binary-relax")
class BinaryRelax(Method):
    Params = BinaryRelaxParams
    requires_quant = True

    def eta(self, epoch: int) -> float | None:
        """Relaxation weight of ``epoch``; None (hard quantization) for the last ``hard_epochs``."""
        if epoch >= self.cfg.epochs - self.params.hard_epochs:
            return None
        return self.params.eta0 * self.params.eta_growth ** epoch

    def before_epoch(self, model: nn.Module, epoch: int) -> None:
        set_relaxation(model, self.eta(epoch))

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        p = self.params
        x_adv = adversarial(p.adv, model, x, y, self.cfg, ctx.eps, ctx.generator) if p.lambda_adv else None
        logits = model(x if x_adv is None else torch.cat([x, x_adv]))
        loss = F.cross_entropy(logits[:len(x)], y)
        if x_adv is not None:
            loss = loss + p.lambda_adv * F.cross_entropy(logits[len(x):], y)
        if p.lambda_gl:
            loss = loss + p.lambda_gl * sum(P.group_lasso(layer.weight) for _, layer in grouped_layers(model))
        return loss

    @torch.no_grad()
    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Hard quantization from here on; prune the channels the group lasso drove to ~0."""
        set_relaxation(model, None)
        pruned = 0
        for _, layer in grouped_layers(model):
            norms = P.channel_norms(layer.weight)
            dead = norms < self.params.prune_threshold * norms.max()
            layer.weight[dead] = 0.0
            pruned += int(dead.sum())
        return {"pruned_channels": pruned, **channel_sparsity(model)}
