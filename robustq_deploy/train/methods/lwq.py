"""Layer-wise adversarial-aware quantization (``lwq``): per-layer bit widths and clipping ranges
chosen from a robustness bound under a model-size budget, then adversarial fine-tuning.

The paper's claims (layer-wise adversarial-aware quantization, after Song, Ranjan and Li 2021):
adversarially trained networks lose more to quantization than naturally trained ones, and
choosing each layer's quantization with a bound built from the layers' Lipschitz constants and
quantization errors keeps more of the robustness than uniform quantization at the same size.

Starting point: an adversarially trained float model (``teacher``: a checkpoint path, or trained
here with ``teacher_method`` for ``teacher_epochs``; its cost counts as this method's training
time). For every conv / linear layer ``l`` with float weight ``W_l`` and each candidate setting
``s = (bits, clip)`` (``bits`` from ``bits``; ``clip`` from ``clips`` for integer widths, the
range ``clip * max|W|``; ternary and binary have their own scales), with ``Q_s`` the weight
quantizer of that setting:

* ``L_l(s) = ||Q_s(W_l)||_op``: the layer's Lipschitz constant, by power iteration on the layer
  operator (conv through ``conv2d`` / ``conv_transpose2d`` with its stride and padding);
* ``E_l(s) = ||Q_s(W_l) - W_l||_op``: its quantization error, same operator norm;
* ``rho_l``: the mean L2 norm of the layer's input on adversarial (FGSM, radius eps)
  calibration examples of the teacher.

With ReLU, pooling and flattening 1-Lipschitz, the change of the logits under an attack of
L-inf radius eps on ``d`` input pixels plus the weight quantization is bounded by ::

    B(s_1..s_L) = eps * sqrt(d) * prod_l L_l(s_l)  +  sum_l E_l(s_l) * rho_l * prod_{k>l} L_k(s_k)

(the first term: adversarial amplification of the quantized network; the second: each layer's
quantization error carried through the layers after it). The settings minimize ``B`` subject to
``sum_l n_l * storage_bits(s_l) <= budget_bits * sum_l n_l`` (``n_l`` weights per layer;
ternary takes 2 bits, binary 1), by a greedy descent (repeatedly take the cheapest bound increase
per bit saved, one storage level at a time, until the budget holds) followed by coordinate
refinement (change one layer at a time while the bound drops and the budget holds). The bound
can favour widths far below the budget (binary weights with scale ``mean|W|`` have small
operator norms), so ``min_fill`` asks the allocation to use at least that fraction of the budget:
after the descent, a climb raises one layer a level and descends the others back into the budget,
taking the least bound increase per bit added, and the refinement stays inside. Use it to compare
at equal model size. ``allocation = "uniform"`` skips the search and gives every layer
``[quant] weight_bits`` without clipping: the equal-size baseline. ``allocation = "error"`` runs
the same search on the quantization-error term alone (every ``L_l`` taken as 1 and no adversarial
term, so it minimizes ``sum_l E_l * rho_l``): the ablation that shows what the Lipschitz terms add.

The chosen settings are written into the run config (``[quant.layers.NAME] weight_bits /
weight_clip``), so the checkpoint rebuilds the same mixed-precision model. The quantized model
takes the teacher's weights and biases (not its quantizer state: a float teacher has none), its
activation quantizers observe their scales on the calibration examples, so it is a working
post-training-quantized model before any fine-tuning (``prepare`` alone builds it), and it is
then fine-tuned for ``train.epochs`` with ``CE(f(x_adv), y)``,
``x_adv`` from the adversary ``adv``. The checkpoint metrics list every layer's choice, ``L``,
``E``, ``rho``, the bound and the size.

Params (defaults): ``teacher`` ("": train one), ``teacher_method`` ("fgsm-rs"),
``teacher_epochs`` (None: ``train.epochs``), ``bits`` ((8, 4, 2, "ternary", "binary")),
``clips`` ((1.0, 0.9, 0.8, 0.7, 0.6, 0.5)), ``budget_bits`` (None: the storage bits of
``[quant] weight_bits``), ``allocation`` ("bound"), ``min_fill`` (0.0: any size within the
budget), ``adv`` ("fgsm-rs"), ``calib`` (512 examples).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import BitWidth, LayerQuantConfig, QuantConfig, RunConfig
from ...errors import ConfigError
from ...models import build_model_for
from ...quant import FLOAT_BITS, WeightQuantizer, quant_layers, weight_storage_bits
from ..adversary import adversarial, check_adversary
from ..base import Method, PrepareContext, StepContext, make_method, method_names, register_method
from ..diagnostics import layer_inputs, operator_norm
from ...checkpoint import read_checkpoint
from ..loop import fit
from ..warm_start import calibrate_activations, load_float_weights

_ALLOWED_BITS = {8, 4, 2, "ternary", "binary"}
ALLOCATIONS = ("bound", "error", "uniform")
POWER_ITERS = 30


@dataclass(frozen=True)
class LWQParams:
    teacher: str = ""
    teacher_method: str = "fgsm-rs"
    teacher_epochs: int | None = None
    bits: tuple[BitWidth, ...] = (8, 4, 2, "ternary", "binary")
    clips: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
    budget_bits: float | None = None
    allocation: str = "bound"
    min_fill: float = 0.0
    adv: str = "fgsm-rs"
    calib: int = 512

    def __post_init__(self):
        problems = []
        bad = [b for b in self.bits if b not in _ALLOWED_BITS]
        if not self.bits or bad:
            problems.append(f"bits must list widths among 8, 4, 2, ternary, binary (got {list(self.bits)})")
        if not self.clips or any(not 0 < c <= 1 for c in self.clips):
            problems.append("clips must be in (0, 1]")
        if self.budget_bits is not None and self.budget_bits <= 0:
            problems.append("budget_bits must be positive")
        if not 0 <= self.min_fill <= 1:
            problems.append("min_fill must be in [0, 1]")
        if self.allocation not in ALLOCATIONS:
            problems.append(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.teacher_epochs is not None and self.teacher_epochs < 1:
            problems.append("teacher_epochs must be >= 1")
        if self.calib < 1:
            problems.append("calib must be >= 1")
        if self.teacher_method not in method_names() or self.teacher_method == "lwq":
            problems.append(f"teacher_method must be another training method, got {self.teacher_method!r}")
        if problems:
            raise ConfigError(f"train.params: {'; '.join(problems)}")
        check_adversary(self.adv, "adv")


@dataclass(frozen=True)
class Candidate:
    bits: BitWidth
    clip: float | None  # None: full range (and always for ternary / binary)
    lipschitz: float
    error: float

    @property
    def storage(self) -> int:
        return weight_storage_bits(self.bits)


def bound(choice: list[Candidate], rho: list[float], adv_radius: float) -> float:
    """``adv_radius * prod L + sum_l E_l * rho_l * prod_{k>l} L_k`` of one setting per layer."""
    total, tail = 0.0, 1.0
    for cand, r in zip(reversed(choice), reversed(rho)):
        total += cand.error * r * tail
        tail *= cand.lipschitz
    return adv_radius * tail + total


def allocate(options: list[list[Candidate]], sizes: list[int], rho: list[float], adv_radius: float,
             budget: float, floor: float = 0.0) -> list[Candidate]:
    """Settings minimizing :func:`bound` with ``floor <= sum(size_l * storage_l) <= budget``
    (greedy descent, then a climb back above ``floor`` if the descent fell below it, then
    coordinate refinement). When the climb cannot reach ``floor``, the largest size it reached holds."""
    if sum(n * min(c.storage for c in opts) for n, opts in zip(sizes, options)) > budget:
        raise ConfigError(f"train.params.budget_bits: {budget / sum(sizes):.3g} bits per weight is below "
                          "the smallest candidate bit width")

    def cost(ch):
        return sum(n * c.storage for n, c in zip(sizes, ch))

    def best_swap(ch, layer, allowed):
        cands = [(bound(ch[:layer] + [c] + ch[layer + 1:], rho, adv_radius), i, c)
                 for i, c in enumerate(options[layer]) if allowed(c)]
        return min(cands, key=lambda t: (t[0], t[1]))[2] if cands else None

    def level_moves(ch, up, frozen=()):
        """Every change of one unfrozen layer to its next storage level down (or up), with the
        bound change per bit saved (or added)."""
        here = bound(ch, rho, adv_radius)
        moves = []
        for layer, opts in enumerate(options):
            if layer in frozen:
                continue
            levels = [c.storage for c in opts if (c.storage > ch[layer].storage if up else c.storage < ch[layer].storage)]
            for i, c in enumerate(opts):
                if levels and c.storage == (min(levels) if up else max(levels)):
                    bits = sizes[layer] * abs(c.storage - ch[layer].storage)
                    trial = ch[:layer] + [c] + ch[layer + 1:]
                    moves.append(((bound(trial, rho, adv_radius) - here) / bits, layer, i, trial))
        return moves

    def descend(ch, frozen=()):
        """Greedy descent into the budget (one storage level per move); None if it cannot."""
        while cost(ch) > budget:
            moves = level_moves(ch, up=False, frozen=frozen)
            if not moves:
                return None
            ch = min(moves, key=lambda t: t[:3])[3]
        return ch

    choice = [min((c for c in opts if c.storage == max(o.storage for o in opts)), key=lambda c: c.error)
              for opts in options]
    for layer in range(len(options)):  # best clip at the top width, layer by layer
        choice[layer] = best_swap(choice, layer, lambda c, s=choice[layer].storage: c.storage == s) or choice[layer]
    choice = descend(choice)
    # climb back above the floor: raise one layer a level, then descend the others into the budget
    # again (a large layer may only fit if small ones give way); the least bound increase per bit added
    while cost(choice) < floor:
        here, now = bound(choice, rho, adv_radius), cost(choice)
        moves = []
        for _, layer, i, trial in level_moves(choice, up=True):
            trial = descend(trial, frozen=(layer,))
            if trial is not None and cost(trial) > now:
                moves.append(((bound(trial, rho, adv_radius) - here) / (cost(trial) - now), layer, i, trial))
        if not moves:
            break
        choice = min(moves, key=lambda t: t[:3])[3]
    low = min(floor, cost(choice))
    for _ in range(10):  # coordinate refinement inside [low, budget]
        changed = False
        for layer in range(len(options)):
            rest = cost(choice) - sizes[layer] * choice[layer].storage
            c = best_swap(choice, layer,
                          lambda c, rest=rest, n=sizes[layer]: low <= rest + n * c.storage <= budget)
            if c is not None and bound(choice[:layer] + [c] + choice[layer + 1:], rho, adv_radius) < bound(choice, rho, adv_radius) - 1e-12:
                choice[layer] = c
                changed = True
        if not changed:
            break
    return choice


def allocate_error_only(options: list[list[Candidate]], sizes: list[int], rho: list[float], budget: float,
                        floor: float = 0.0) -> list[Candidate]:
    """:func:`allocate` on the quantization-error term alone: every Lipschitz constant taken as 1
    and no adversarial term, so it minimizes ``sum_l E_l * rho_l`` in the same size range."""
    plain = [[replace(c, lipschitz=1.0) for c in opts] for opts in options]
    picked = allocate(plain, sizes, rho, 0.0, budget, floor)
    return [opts[p.index(c)] for opts, p, c in zip(options, plain, picked)]


def _quantized_weight(w: torch.Tensor, bits: BitWidth, clip: float | None, per_channel: bool) -> torch.Tensor:
    wq, _ = WeightQuantizer(bits, per_channel, clip=clip)(w)
    return wq.detach()


def _rebuild(run: RunConfig, quant: QuantConfig, model: nn.Module) -> nn.Module:
    """The run's model with another ``[quant]`` (a built-in architecture or the factory's model)."""
    if "object" in (getattr(model, "source", None) or {}):
        raise ConfigError("train.method 'lwq' rebuilds the model with other bit widths; give it as [model] factory")
    return build_model_for(run.model, quant, model.num_classes, model.input_shape)


@register_method("lwq")
class LayerWiseQuantization(Method):
    Params = LWQParams
    requires_quant = True

    def _teacher(self, model: nn.Module, ctx: PrepareContext) -> nn.Module:
        p, run = self.params, ctx.run
        if p.teacher:
            teacher, tcfg = read_checkpoint(p.teacher, model=run.model.factory)
            if (tcfg.model.arch, tcfg.model.factory) != (run.model.arch, run.model.factory):
                raise ConfigError(f"train.params.teacher: {p.teacher} is a {tcfg.model.arch or tcfg.model.factory!r} "
                                  f"model, the run trains {run.model.arch or run.model.factory!r}")
            return teacher.to(ctx.device)
        float_quant = QuantConfig(weight_bits=FLOAT_BITS, act_bits=FLOAT_BITS)
        teacher = _rebuild(run, float_quant, model).to(ctx.device)
        tcfg = replace(self.cfg, method=p.teacher_method, params={}, epochs=p.teacher_epochs or self.cfg.epochs)
        fit(teacher, make_method(tcfg), ctx.x, ctx.y, tcfg, progress=ctx.progress)
        return teacher

    def prepare(self, model: nn.Module, ctx: PrepareContext) -> nn.Module:
        p, run = self.params, ctx.run
        teacher = self._teacher(model, ctx).eval()
        layers = quant_layers(teacher)
        calib_x, calib_y = ctx.x[:p.calib].to(ctx.device), ctx.y[:p.calib].to(ctx.device)
        eps = self.cfg.attack.eps
        gen = torch.Generator().manual_seed(self.cfg.seed)
        x_adv = adversarial("fgsm-rs", teacher, calib_x, calib_y, self.cfg, eps, gen)
        inputs = layer_inputs(teacher, x_adv)
        shapes = {name: tuple(t.shape[1:]) for name, t in inputs.items()}
        rho = {name: float(t.flatten(1).norm(dim=1).mean()) for name, t in inputs.items()}
        per_channel = run.quant.granularity == "per_channel"
        options = []
        for name, layer in layers:
            opts = []
            for bits in p.bits:
                for clip in (p.clips if isinstance(bits, int) else (1.0,)):
                    wq = _quantized_weight(layer.weight.detach(), bits, None if clip == 1.0 else clip, per_channel)
                    opts.append(Candidate(bits, None if clip == 1.0 else clip,
                                          operator_norm(layer, shapes[name], wq, POWER_ITERS),
                                          operator_norm(layer, shapes[name], wq - layer.weight.detach(), POWER_ITERS)))
            options.append(opts)
        sizes = [layer.weight.numel() for _, layer in layers]
        budget_bits = p.budget_bits if p.budget_bits is not None else weight_storage_bits(run.quant.weight_bits)
        adv_radius = eps * math.sqrt(ctx.x[0].numel())
        rho_list = [rho[name] for name, _ in layers]
        if p.allocation == "uniform":
            if run.quant.weight_bits not in p.bits:
                raise ConfigError(f"train.params.bits: uniform allocation needs [quant] weight_bits "
                                  f"{run.quant.weight_bits!r} among the candidates")
            choice = [next(c for c in opts if c.bits == run.quant.weight_bits and c.clip is None) for opts in options]
        elif p.allocation == "error":
            choice = allocate_error_only(options, sizes, rho_list, budget_bits * sum(sizes),
                                         p.min_fill * budget_bits * sum(sizes))
        else:
            choice = allocate(options, sizes, rho_list, adv_radius, budget_bits * sum(sizes),
                              p.min_fill * budget_bits * sum(sizes))
        overrides = dict(run.quant.layers)
        for (name, _), c in zip(layers, choice):
            old = overrides.get(name, LayerQuantConfig())
            overrides[name] = replace(old, weight_bits=c.bits, weight_clip=c.clip)
        self.quant = replace(run.quant, layers=overrides)
        self.report = {
            "budget_bits": budget_bits,
            "bits_per_weight": sum(n * c.storage for n, c in zip(sizes, choice)) / sum(sizes),
            "bound": bound(choice, rho_list, adv_radius),
            "layers": [{"layer": name, "bits": c.bits, "clip": c.clip, "lipschitz": c.lipschitz,
                        "error": c.error, "rho": r, "weights": n}
                       for (name, _), c, r, n in zip(layers, choice, rho_list, sizes)],
        }
        student = _rebuild(run, self.quant, model).to(ctx.device)
        load_float_weights(student, teacher, "train.params.teacher")
        calibrate_activations(student, calib_x)
        return student

    def run_config(self, cfg: RunConfig) -> RunConfig:
        return replace(cfg, quant=self.quant)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        x_adv = adversarial(self.params.adv, model, x, y, self.cfg, ctx.eps, ctx.generator)
        return F.cross_entropy(model(x if x_adv is None else x_adv), y)

    def finish(self, model: nn.Module) -> dict[str, Any]:
        return {"lwq": self.report}
