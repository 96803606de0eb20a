"""The attack protocol and its registry.

An attack is a class registered with ``@register_attack("name")``. It declares a frozen
``Params`` dataclass (read from ``[verify.attack_params.NAME]`` and validated like the rest of the
config), the threat norms it supports, and how it needs the model (``access``):

* ``"gradient"``: white-box; ``perturb`` gets a differentiable model (the fake-quant twin, whose
  quantizers pass straight-through gradients: BPDA), and its output is replayed on the targets;
* ``"query"``: black-box; ``perturb`` gets the target itself (a deployed module) and only calls it;
* ``"transfer"``: crafted on another model named by :attr:`Attack.source` (the float model or the
  twin) and replayed on the targets.

A query attack also says what it reads from the target (``outputs``): ``"scores"`` (the logits,
Square) or ``"labels"`` (only the predicted class, a decision-based attack such as ``rays``);
score-based attacks are not run against engines that return labels only.

``perturb(model, x, y, generator=None) -> x_adv`` returns points inside the threat model (not yet
rounded to the input grid; the caller does that before scoring). ``generator`` is the only
source of randomness, so a seeded run is reproducible batch by batch.

To add an attack: write the class in its own module, decorate it, import the module in
:mod:`robustq_deploy.attacks`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from ..config import from_dict
from ..errors import ConfigError
from ..registry import Registry
from .threat import NORMS, ThreatModel

ACCESS = ("gradient", "query", "transfer")
Model = Callable[[torch.Tensor], torch.Tensor]  # float inputs [N, C, H, W] -> logits [N, K]


@dataclass(frozen=True)
class NoParams:
    pass


class Attack:
    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    access: ClassVar[str] = "gradient"
    outputs: ClassVar[str] = "scores"  # query attacks: "scores" (logits) or "labels" (argmax only)
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __init__(self, threat: ThreatModel, params: Any):
        self.threat = threat
        self.params = params

    @property
    def source(self) -> str | None:
        """The model the attack crafts on: ``"white-box"`` (the differentiable surrogate) for
        gradient attacks, a named model for transfer attacks, None (the target) for query attacks."""
        return {"gradient": "white-box", "query": None}.get(self.access)

    def perturb(self, model: Model, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Name, access and parameters, as recorded in reports."""
        return {"name": self.name, "access": self.access, "source": self.source,
                "params": dataclasses.asdict(self.params)}


@torch.no_grad()
def scored_wrong(model: Model, threat: ThreatModel, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per point: is ``x_adv`` misclassified *as it will be scored*, i.e. after rounding to the input
    grid? Attacks that stop at the first misclassified iterate must test this, not the continuous
    point: a barely adversarial point often turns correct again once its pixels are rounded."""
    return model(threat.to_grid(x_adv, x)).argmax(1) != y


ATTACKS: Registry[type[Attack]] = Registry("attack", key="verify.attacks")


def register_attack(name: str):
    def deco(cls: type[Attack]) -> type[Attack]:
        if cls.access not in ACCESS:
            raise ValueError(f"attack {name!r}: access {cls.access!r} not in {ACCESS}")  # a bug, not user input
        cls.name = name
        return ATTACKS.add(name, cls)
    return deco


def attack_names() -> list[str]:
    return sorted(ATTACKS.names())


def attack_class(name: str) -> type[Attack]:
    return ATTACKS.get(name)


def make_attack(name: str, threat: ThreatModel, params: dict[str, Any] | None = None, **defaults: Any) -> Attack:
    """Build attack ``name`` for ``threat``. ``params`` are the attack's own options (unknown keys
    are refused); ``defaults`` (``steps``, ``restarts``, ``step_size`` from the verify config) fill
    the fields of the attack's ``Params`` that ``params`` leaves unset and ignore the others."""
    cls = attack_class(name)
    if threat.norm not in cls.norms:
        raise ConfigError(f"attack {name!r} supports {' and '.join(cls.norms)} threats, not {threat.norm}")
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    merged = {k: v for k, v in defaults.items() if k in fields and v is not None}
    merged.update(params or {})
    return cls(threat, from_dict(cls.Params, merged, f"verify.attack_params.{name}"))
