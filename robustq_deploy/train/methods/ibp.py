"""IBP: certified training by interval bound propagation through the fake-quant twin.

Gowal et al. 2018 ("On the Effectiveness of Interval Bound Propagation for Training Verifiably
Robust Models") propagate the box ``[x - eps, x + eps]`` through the network layer by layer
(``center +- radius``, the radius through ``|W|``) and train on

    kappa * CE(f(x), y) + (1 - kappa) * CE(z_hat, y),
    z_hat_y = 0,  z_hat_j = -(lower bound of z_y - z_j)   (the worst case the box allows),

with eps ramped linearly from 0 to its target after a natural warm-up and kappa ramped from 1 to
``natural_weight``. The specification ``z_y - z_j`` is folded into the last layer (its weight
rows subtracted before the radius goes through ``|W|``), the paper's "elision", which gives
tighter margins than subtracting separate logit bounds.

Here the box goes through the *quantized* twin, as quantization-aware IBP does (QA-IBP, Lechner
et al., AAAI 2023): every input quantizer is monotone, so applying it to both ends of an
interval gives the exact interval of the quantized values (the first layer's maps the pixel box
onto the uint8 grid exactly as the deployed QuantizeLinear does; the others round onto the next
layer's grid as the deployed requantization does). Rounding passes gradients straight through
(the quantizers' own STE), and weights are the fake-quantized weights, so the bounds trained are
those of the integer model that is exported, up to the fixed-point rounding near-ties that
``robustq_deploy.certify`` accounts for. Quantizer observers are frozen while bounds propagate
(scales follow the clean activations only).

Schedule, counted in optimizer steps: ``warmup_epochs`` of natural training, then eps and kappa
ramp linearly over ``ramp_epochs``; the target radius is ``train.attack.eps`` (times the loop's
own per-epoch ``train.eps_warmup_epochs`` factor, normally 0 = off). Gowal et al. trained MNIST
with a radius above the tested one (0.2 for 0.1, 0.4 for 0.3); set ``train.attack.eps``
accordingly. ``bound``: ``"ibp"`` only (CROWN-IBP's linear bounds are not implemented).

Supported layers: the quantized conv / linear layers, ReLU, max pooling, flatten, residual
:class:`~robustq_deploy.quant.QAdd` and average pooling (binary input quantizers too: ``sign`` is
monotone). Anything else, BatchNorm included, is refused when training starts, naming the layers.

Params: ``natural_weight`` (final kappa, default 0.5, Gowal et al.'s), ``warmup_epochs``
(default 1.0), ``ramp_epochs`` (default 5.0; fractions allowed).
"""
from __future__ import annotations

import contextlib
import math
import operator
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...errors import ConfigError, UnsupportedError
from ...quant import QAdd, QConv2d, QLinear, QUANT_LAYERS
from ...quant.modules import ActQuantizer
from ..base import Method, PrepareContext, StepContext, register_method
from ..distributed import unwrap

Box = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class IBPParams:
    natural_weight: float = 0.5
    warmup_epochs: float = 1.0
    ramp_epochs: float = 5.0
    bound: str = "ibp"

    def __post_init__(self):
        if not 0 <= self.natural_weight <= 1:
            raise ConfigError(f"train.params.natural_weight: must be in [0, 1], got {self.natural_weight!r}")
        if self.warmup_epochs < 0 or self.ramp_epochs < 0:
            raise ConfigError("train.params.warmup_epochs and ramp_epochs: must be >= 0")
        if self.bound != "ibp":
            raise ConfigError(f"train.params.bound: unknown bound {self.bound!r}; choose ibp")


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*QUANT_LAYERS, QAdd)) or super().is_leaf_module(m, qualname)


@contextlib.contextmanager
def frozen_observers(model: nn.Module) -> Iterator[None]:
    """Activation quantizers in eval mode (no observer update, no LSQ initialisation)."""
    qs = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    modes = [q.training for q in qs]
    for q in qs:
        q.train(False)
    try:
        yield
    finally:
        for q, mode in zip(qs, modes):
            q.train(mode)


def _affine(layer: nn.Module, box: Box, w: torch.Tensor, b: torch.Tensor | None) -> Box:
    lo, hi = box
    c, r = (hi + lo) / 2, (hi - lo) / 2
    if isinstance(layer, QConv2d):
        args = (layer.stride, layer.padding, layer.dilation, layer.groups)
        mid, rad = F.conv2d(c, w, b, *args), F.conv2d(r, w.abs(), None, *args)
    else:
        mid, rad = F.linear(c, w, b), F.linear(r, w.abs())
    return mid - rad, mid + rad


def _quantized_box(layer: nn.Module, box: Box) -> tuple[Box, torch.Tensor, torch.Tensor | None]:
    """The layer's input quantizer on both ends (monotone), its fake-quantized weight and bias."""
    lo, w, b = layer.quant_inputs(box[0])
    hi = layer.in_q(box[1])
    return (lo, hi), w, b


def _monotone(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[nn.Module | None, Box], Box]:
    return lambda _m, box: (fn(box[0]), fn(box[1]))


class IntervalTwin:
    """Interval bounds of a quantized twin on the L-inf box around its input."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.graph = fx.GraphModule(model, _Tracer().trace(model)).graph
        problems = [self._describe(n) for n in self.graph.nodes if self._rule(n) is None]
        if problems:
            raise UnsupportedError(f"ibp: no interval rule for: {', '.join(problems)}")
        outs = [n for n in self.graph.nodes if n.op == "output"]
        last = outs[0].args[0] if outs else None
        self.last = last if isinstance(last, fx.Node) and last.op == "call_module" and isinstance(
            model.get_submodule(last.target), QLinear) else None

    def _describe(self, n: fx.Node) -> str:
        return f"{n.target} ({type(self.model.get_submodule(n.target)).__name__})" if n.op == "call_module" else str(n.target)

    def _rule(self, n: fx.Node):
        if n.op in ("placeholder", "output"):
            return n.op
        if n.op == "call_module":
            m = self.model.get_submodule(n.target)
            for types, rule in _MODULE_RULES:
                if isinstance(m, types):
                    return rule
            return None
        return _FUNCTION_RULES.get(n.target if n.op == "call_function" else ("method", n.target))

    def bounds(self, x: torch.Tensor, eps: float, y: torch.Tensor | None = None) -> torch.Tensor | Box:
        """Lower bounds of the margins ``z_y - z_j`` ([N, classes], 0 at ``y``) when ``y`` is given
        (last layer elided), else the logit box."""
        env: dict[str, Box] = {}
        result = None
        with frozen_observers(self.model):
            for n in self.graph.nodes:
                if n.op == "placeholder":
                    env[n.name] = ((x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0))
                elif n.op == "output":
                    result = env[n.args[0].name]
                elif n is self.last and y is not None:
                    return self._margins(self.model.get_submodule(n.target), env[n.args[0].name], y)
                else:
                    args = [env[a.name] if isinstance(a, fx.Node) else a for a in n.args]
                    mod = self.model.get_submodule(n.target) if n.op == "call_module" else None
                    env[n.name] = self._rule(n)(mod, *args)
        if y is None:
            return result
        lo, hi = result
        margin = lo.gather(1, y[:, None]) - hi
        return margin.scatter(1, y[:, None], 0.0)

    @staticmethod
    def _margins(layer: nn.Module, box: Box, y: torch.Tensor) -> torch.Tensor:
        (lo, hi), w, b = _quantized_box(layer, box)
        c, r = (hi + lo) / 2, (hi - lo) / 2
        dw = w[y][:, None, :] - w[None, :, :]  # [N, classes, in]: rows of z_y - z_j
        mid = torch.einsum("nki,ni->nk", dw, c)
        if b is not None:
            mid = mid + (b[y][:, None] - b[None, :])
        return mid - torch.einsum("nki,ni->nk", dw.abs(), r)


def _layer(m: nn.Module, box: Box) -> Box:
    qbox, w, b = _quantized_box(m, box)
    return _affine(m, qbox, w, b)


def _qadd(m: QAdd, a: Box, b: Box) -> Box:
    if not m.in_q.enabled:
        return a[0] + b[0], a[1] + b[1]
    return m.in_q(a[0]) + m.in_q(b[0]), m.in_q(a[1]) + m.in_q(b[1])


def _flatten(_m, box: Box, start: int = 1, end: int = -1) -> Box:
    return torch.flatten(box[0], start, end), torch.flatten(box[1], start, end)


def _module(m: nn.Module, box: Box) -> Box:
    return m(box[0]), m(box[1])


def _add(_m, a: Box, b: Box) -> Box:
    return a[0] + b[0], a[1] + b[1]


_MODULE_RULES: list[tuple[tuple[type, ...], Callable]] = [
    (QUANT_LAYERS, _layer), ((QAdd,), _qadd),
    ((nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Identity), _module),
    ((nn.Flatten,), lambda m, box: _flatten(m, box, m.start_dim, m.end_dim)),
]
_FUNCTION_RULES: dict[object, Callable] = {
    torch.relu: _monotone(torch.relu), F.relu: _monotone(F.relu), ("method", "relu"): _monotone(torch.relu),
    torch.flatten: _flatten, ("method", "flatten"): _flatten,
    F.max_pool2d: lambda _m, box, *a: (F.max_pool2d(box[0], *a), F.max_pool2d(box[1], *a)),
    operator.add: _add, torch.add: _add,
}


def ramp(step: int, start: float, length: float) -> float:
    """0 before ``start``, then linear to 1 over ``length`` (in steps), 1 after."""
    if step < start:
        return 0.0
    return 1.0 if length <= 0 else min(1.0, (step - start) / length)


@register_method("ibp")
class IBP(Method):
    Params = IBPParams
    requires_quant = False

    def prepare(self, model: nn.Module, ctx: PrepareContext) -> nn.Module:
        self.twin = IntervalTwin(model)
        self.steps_per_epoch = math.ceil(len(ctx.x) / self.cfg.batch_size)
        return model

    def schedule(self, step: int, eps: float) -> tuple[float, float]:
        """(eps, kappa) at optimizer step ``step``."""
        p = self.params
        t = ramp(step, p.warmup_epochs * self.steps_per_epoch, p.ramp_epochs * self.steps_per_epoch)
        return eps * t, 1.0 - (1.0 - p.natural_weight) * t

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        eps, kappa = self.schedule(ctx.step, ctx.eps)
        natural = F.cross_entropy(model(x), y)
        if kappa >= 1.0:
            return natural
        if unwrap(model) is not self.twin.model:
            raise ConfigError("ibp: the model changed after prepare")
        margins = self.twin.bounds(x, eps, y)
        return kappa * natural + (1 - kappa) * F.cross_entropy(-margins, y)
