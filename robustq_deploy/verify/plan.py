"""What a verification run does, resolved and checked from a :class:`VerifyConfig` before any work.

The attack budget (``verify.budget``, :data:`BUDGETS`) names the default ensemble and its
parameters; ``verify.attacks`` replaces the list (the budget still sets the parameters of the
attacks it knows), and ``verify.steps`` / ``restarts`` / ``attack_params`` override them.
Costs per attacked point that is still robust (gradient evaluations on the twin; queries to each
deployed engine):

* ``fast``: APGD-CE (100 steps), then Square (1000 queries): <= 100 gradients + 1000 queries;
* ``standard`` (AutoAttack's standard version without FAB-T): APGD-CE (100 steps), APGD-T
  (100 steps toward each of 9 target classes), then Square (5000 queries): <= 1000 gradients +
  5000 queries;
* ``thorough``: APGD-CE and APGD-DLR with 5 restarts, APGD-T with 3 restarts per target, PGD-100
  with 5 restarts, then Square (10000 queries): <= 4200 gradients + 10000 queries.

Engines that return labels only get the decision-based ``rays`` attack with the budget's query
count instead of Square (:attr:`Plan.decision`).

:func:`build_plan` turns attack names and parameters into attack objects for the main radius,
each sweep radius and the eps = 1 sanity check; :func:`validate_verify` (called by
:func:`robustq_deploy.config.validate`) builds the plan only to report every configuration
problem up front, so ``robustq run`` fails before training rather than after it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..attacks import Attack, ThreatModel, make_attack, order_attacks
from ..config import VerifyConfig
from ..errors import ConfigError

EPS1_STEPS = 10  # PGD steps of the eps = 1 sanity check (any working attack needs few)


@dataclass(frozen=True)
class Budget:
    attacks: tuple[str, ...]
    params: dict[str, dict[str, Any]]


BUDGETS: dict[str, Budget] = {
    "fast": Budget(("apgd-ce", "square"), {"apgd-ce": {"steps": 100, "restarts": 1}, "square": {"queries": 1000},
                                           "rays": {"queries": 1000}}),
    "standard": Budget(("apgd-ce", "apgd-t", "square"),
                       {"apgd-ce": {"steps": 100, "restarts": 1}, "apgd-t": {"steps": 100, "targets": 9, "restarts": 1},
                        "square": {"queries": 5000}, "rays": {"queries": 5000}}),
    "thorough": Budget(("apgd-ce", "apgd-dlr", "apgd-t", "pgd", "square"),
                       {"apgd-ce": {"steps": 100, "restarts": 5}, "apgd-dlr": {"steps": 100, "restarts": 5},
                        "apgd-t": {"steps": 100, "targets": 9, "restarts": 3}, "pgd": {"steps": 100, "restarts": 5},
                        "square": {"queries": 10000}, "rays": {"queries": 10000}}),
}
TWINS = ("auto", "checkpoint", "onnx")


def budget(cfg: VerifyConfig) -> Budget:
    if cfg.budget not in BUDGETS:
        raise ConfigError(f"verify.budget: unknown budget {cfg.budget!r}; choose one of {', '.join(BUDGETS)}")
    return BUDGETS[cfg.budget]


def attack_list(cfg: VerifyConfig) -> tuple[str, ...]:
    """The main attacks: ``verify.attacks``, or the budget's ensemble when that is empty."""
    return cfg.attacks or budget(cfg).attacks


@dataclass
class Plan:
    threat: ThreatModel
    attacks: list[Attack]  # main radius, in run order (query attacks last)
    float_attacks: list[Attack]  # the same without query attacks (the float model is not deployed)
    sweep: list[tuple[ThreatModel, list[Attack]]]  # one entry per radius of eps_sweep
    eps1: tuple[ThreatModel, Attack]
    decision: Attack | None  # the label-only attack for engines that return labels only


def _attack(name: str, threat: ThreatModel, cfg: VerifyConfig) -> Attack:
    common = {k: v for k, v in (("steps", cfg.steps), ("restarts", cfg.restarts), ("step_size", cfg.step_size))
              if v is not None}
    return make_attack(name, threat, cfg.attack_params.get(name), **{**budget(cfg).params.get(name, {}), **common})


def _attacks(names: tuple[str, ...], threat: ThreatModel, cfg: VerifyConfig) -> list[Attack]:
    return order_attacks([_attack(n, threat, cfg) for n in names])


def build_plan(cfg: VerifyConfig) -> Plan:
    validate_fields(cfg)
    threat = ThreatModel(cfg.norm, cfg.eps)
    attacks = _attacks(attack_list(cfg), threat, cfg)
    if not cfg.eps_sweep and cfg.sweep_attacks:
        _attacks(cfg.sweep_attacks, threat, cfg)  # their parameters are checked even without a sweep
    sweep = []
    for eps in cfg.eps_sweep:
        t = ThreatModel(cfg.norm, eps)
        sweep.append((t, _attacks(cfg.sweep_attacks, t, cfg)))
    t1 = ThreatModel("linf", 1.0)
    eps1 = make_attack("pgd", t1, {"steps": EPS1_STEPS, "restarts": 1})
    # the label-only attacks (RayS, Square) search L-inf balls; other norms have none
    decision = _attack("rays", threat, cfg) if cfg.norm == "linf" else None
    return Plan(threat, attacks, [a for a in attacks if a.access != "query"], sweep, (t1, eps1), decision)


def validate_fields(cfg: VerifyConfig) -> None:
    """Checks that need no registry: lists, bounds, the device address."""
    budget(cfg)
    if cfg.twin not in TWINS:
        raise ConfigError(f"verify.twin: unknown twin {cfg.twin!r}; choose one of {', '.join(TWINS)}")
    from ..twin.inputs import RANGES

    if cfg.input_range not in ("auto", *RANGES):
        raise ConfigError(f"verify.input_range: unknown range {cfg.input_range!r}; choose auto, {', '.join(RANGES)}")
    if cfg.examples < 0:
        raise ConfigError(f"verify.examples: must be >= 0, got {cfg.examples}")
    for key in ("attacks", "sweep_attacks"):
        names = getattr(cfg, key)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"verify.{key}: {', '.join(dup)} listed twice")
    if cfg.eps_sweep and not cfg.sweep_attacks:
        raise ConfigError("verify.sweep_attacks: an eps sweep needs at least one attack")
    unused = sorted(set(cfg.attack_params) - set(attack_list(cfg)) - set(cfg.sweep_attacks) - {"rays"})
    if unused:
        raise ConfigError(f"verify.attack_params: parameters for {', '.join(unused)}, which no attack list runs")
    if not cfg.engines:
        raise ConfigError("verify.engines: give at least one engine (onnxruntime, tvm, a target name or all)")
    for name in ("steps", "restarts", "limit", "batch_size", "threads"):
        v = getattr(cfg, name)
        if v is not None and v <= 0:
            raise ConfigError(f"verify.{name}: must be positive, got {v!r}")
    for f in fields(cfg.validity):
        v = getattr(cfg.validity, f.name)
        if f.name == "points":
            if v <= 0:
                raise ConfigError(f"verify.validity.points: must be positive, got {v!r}")
        elif not 0 <= v <= 1:
            raise ConfigError(f"verify.validity.{f.name}: must be a fraction in [0, 1], got {v!r}")
    if cfg.device is not None:
        from .rpc import parse_device

        parse_device(cfg.device)


def validate_verify(cfg: VerifyConfig) -> VerifyConfig:
    build_plan(cfg)
    return cfg
