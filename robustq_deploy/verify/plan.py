"""What a verification run does, resolved and checked from a :class:`VerifyConfig` before any work.

:func:`build_plan` turns attack names and parameters into attack objects for the main radius,
each sweep radius and the eps = 1 sanity check; :func:`validate_verify` (called by
:func:`robustq_deploy.config.validate`) builds the plan only to report every configuration
problem up front, so ``robustq run`` fails before training rather than after it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..attacks import Attack, ThreatModel, make_attack, order_attacks
from ..config import VerifyConfig
from ..errors import ConfigError

EPS1_STEPS = 10  # PGD steps of the eps = 1 sanity check (any working attack needs few)


@dataclass
class Plan:
    threat: ThreatModel
    attacks: list[Attack]  # main radius, in run order (query attacks last)
    float_attacks: list[Attack]  # the same without query attacks (the float model is not deployed)
    sweep: list[tuple[ThreatModel, list[Attack]]]  # one entry per radius of eps_sweep
    eps1: tuple[ThreatModel, Attack]


def _attacks(names: tuple[str, ...], threat: ThreatModel, cfg: VerifyConfig) -> list[Attack]:
    common = {"steps": cfg.steps, "restarts": cfg.restarts, "step_size": cfg.step_size}
    return order_attacks([make_attack(n, threat, cfg.attack_params.get(n), **common) for n in names])


def build_plan(cfg: VerifyConfig) -> Plan:
    validate_fields(cfg)
    threat = ThreatModel(cfg.norm, cfg.eps)
    attacks = _attacks(cfg.attacks, threat, cfg)
    sweep = []
    for eps in cfg.eps_sweep:
        t = ThreatModel(cfg.norm, eps)
        sweep.append((t, _attacks(cfg.sweep_attacks, t, cfg)))
    t1 = ThreatModel("linf", 1.0)
    eps1 = make_attack("pgd", t1, {"steps": EPS1_STEPS, "restarts": 1})
    return Plan(threat, attacks, [a for a in attacks if a.access != "query"], sweep, (t1, eps1))


def validate_fields(cfg: VerifyConfig) -> None:
    """Checks that need no registry: lists, bounds, the device address."""
    for key in ("attacks", "sweep_attacks"):
        names = getattr(cfg, key)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"verify.{key}: {', '.join(dup)} listed twice")
    if not cfg.attacks:
        raise ConfigError("verify.attacks: give at least one attack")
    if cfg.eps_sweep and not cfg.sweep_attacks:
        raise ConfigError("verify.sweep_attacks: an eps sweep needs at least one attack")
    unused = sorted(set(cfg.attack_params) - set(cfg.attacks) - set(cfg.sweep_attacks))
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
