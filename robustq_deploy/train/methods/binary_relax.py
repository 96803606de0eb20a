"""BinaryRelax (Yin, Zhang, Lyu, Osher, Qi and Xin 2018, "BinaryRelax: A Relaxation Approach for
Training Deep Neural Networks with Quantized Weights"), with the robustness / sparsity trade-off
loss of the robust quantized and channel-pruned EnResNets of the same group.

What the papers say: relaxed quantization trains quantized weights (ternary, binary, low-bit)
close to float accuracy; starting from an adversarially (PGD) trained network, quantizing it with
a loss that mixes the natural and the adversarial loss keeps natural and robust accuracy, and
that trade-off loss, compared with the adversarial loss alone, leaves more weights and whole
channels at zero (structured sparsity); an explicit channel group lasso adds more.

Relaxed quantization: during training every layer computes with the relaxed weight ::

    W_relaxed = (eta * Q(W) + W) / (1 + eta)            eta_e = eta0 * growth ** e

(the minimizer of ``||X - W||^2 + eta * ||X - Q(W)||^2``; ``Q`` the layer's weight quantizer:
ternary, 4-bit, any width), the gradient reaching the float weights ``W`` straight through ``Q``.
``eta`` grows geometrically each epoch, and the last ``hard_epochs`` epochs train with the hard
quantization ``Q(W)`` (eta = infinity), which is also what the finished model computes.

Objective per batch (the trade-off loss)::

    lambda_nat * CE(f(x), y) + lambda_adv * CE(f(x_adv), y) + lambda_gl * sum_l sum_c sqrt(n_c) ||W_l[c]||_2

``x_adv`` from the named adversary ``adv`` (default FGSM with random start; ``"pgd"``: PGD with
``train.attack``); ``lambda_nat = 0`` is adversarial training alone (the clean pass is then
skipped). The channel group lasso runs over the output channels of every conv / linear layer but
the classifier. ``init`` starts from a trained model of the same architecture (a checkpoint, e.g.
a PGD-trained float model): its weights and biases are copied and the activation scales observed
on training examples (:mod:`robustq_deploy.train.warm_start`). At the end, channels whose L2 norm
is below ``prune_threshold`` times the largest channel norm of their layer are set to zero. The
checkpoint metrics report, before and after that pruning, the channel sparsity (the fraction of
output channels whose quantized weights are all zero, overall and per layer) and the fraction of
quantized weights that are zero (for ternary weights: the zero level).

Params (defaults): ``eta0`` (1.0), ``eta_growth`` (2.0 per epoch), ``hard_epochs`` (1),
``lambda_nat`` (1.0), ``lambda_adv`` (1.0), ``lambda_gl`` (1e-5), ``adv`` ("fgsm-rs"),
``prune_threshold`` (0.05), ``init`` ("": random initialisation), ``calib`` (512 examples that
observe the activation scales after ``init``).
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
from ..base import Method, PrepareContext, StepContext, register_method
from ..distributed import unwrap
from ..warm_start import calibrate_activations, load_float_weights


@dataclass(frozen=True)
class BinaryRelaxParams:
    eta0: float = 1.0
    eta_growth: float = 2.0
    hard_epochs: int = 1
    lambda_nat: float = 1.0
    lambda_adv: float = 1.0
    lambda_gl: float = 1e-5
    adv: str = "fgsm-rs"
    prune_threshold: float = 0.05
    init: str = ""
    calib: int = 512

    def __post_init__(self):
        problems = []
        if self.eta0 <= 0 or self.eta_growth < 1:
            problems.append("need eta0 > 0 and eta_growth >= 1")
        if self.hard_epochs < 0:
            problems.append("hard_epochs must be >= 0")
        if self.lambda_nat < 0 or self.lambda_adv < 0 or self.lambda_gl < 0:
            problems.append("lambda_nat, lambda_adv and lambda_gl must be >= 0")
        if self.lambda_nat == 0 and self.lambda_adv == 0:
            problems.append("lambda_nat and lambda_adv are both 0: nothing to fit")
        if not 0 <= self.prune_threshold < 1:
            problems.append("prune_threshold must be in [0, 1)")
        if self.calib < 1:
            problems.append("calib must be >= 1")
        if problems:
            raise ConfigError(f"train.params: {'; '.join(problems)}")
        check_adversary(self.adv, "adv")


def grouped_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers whose output channels the group lasso acts on: all conv / linear but the last."""
    return quant_layers(unwrap(model))[:-1]


def channel_sparsity(model: nn.Module) -> dict[str, Any]:
    """Fraction of output channels whose quantized weights are all zero (overall and per layer),
    and the fraction of quantized weights that are zero, over the grouped layers."""
    per_layer, zero, total, zero_w, total_w = {}, 0, 0, 0, 0
    for name, layer in grouped_layers(model):
        w = layer.weight.detach()
        levels = layer.w_q.levels_and_scale(w)[0] if layer.w_q.enabled else w
        dead = int((levels.reshape(len(w), -1) == 0).all(dim=1).sum())
        per_layer[name] = dead / len(w)
        zero, total = zero + dead, total + len(w)
        zero_w, total_w = zero_w + int((levels == 0).sum()), total_w + levels.numel()
    return {"channel_sparsity": zero / max(total, 1), "channel_sparsity_per_layer": per_layer,
            "zero_weight_fraction": zero_w / max(total_w, 1)}


def set_relaxation(model: nn.Module, eta: float | None) -> None:
    for _, layer in quant_layers(unwrap(model)):
        layer.w_q.relax_eta = eta


@register_method("binary-relax")
class BinaryRelax(Method):
    Params = BinaryRelaxParams
    requires_quant = True

    def prepare(self, model: nn.Module, ctx: PrepareContext) -> nn.Module:
        if self.params.init:
            from ...checkpoint import read_checkpoint

            base, bcfg = read_checkpoint(self.params.init)
            if bcfg.model.arch != ctx.run.model.arch:
                raise ConfigError(f"train.params.init: {self.params.init} is a {bcfg.model.arch!r} model, "
                                  f"the run trains {ctx.run.model.arch!r}")
            load_float_weights(model, base, "train.params.init")
            calibrate_activations(model, ctx.x[:self.params.calib].to(ctx.device))
        return model

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
        if x_adv is None:
            loss = p.lambda_nat * F.cross_entropy(model(x), y)
        elif p.lambda_nat == 0:
            loss = p.lambda_adv * F.cross_entropy(model(x_adv), y)
        else:
            logits = model(torch.cat([x, x_adv]))
            loss = p.lambda_nat * F.cross_entropy(logits[:len(x)], y) + p.lambda_adv * F.cross_entropy(logits[len(x):], y)
        if p.lambda_gl:
            loss = loss + p.lambda_gl * sum(P.group_lasso(layer.weight) for _, layer in grouped_layers(model))
        return loss

    @torch.no_grad()
    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Hard quantization from here on; prune the channels the group lasso drove to ~0."""
        set_relaxation(model, None)
        before = channel_sparsity(model)
        pruned = 0
        for _, layer in grouped_layers(model):
            norms = P.channel_norms(layer.weight)
            dead = norms < self.params.prune_threshold * norms.max()
            layer.weight[dead] = 0.0
            pruned += int(dead.sum())
        return {"pruned_channels": pruned, **channel_sparsity(model),
                **{f"{k}_before_pruning": v for k, v in before.items()}}
