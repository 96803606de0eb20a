"""The whole run config checked before the first stage runs, and run config files read.

:func:`validate` checks every value of a :class:`~robustq_deploy.config.RunConfig` against the
registries of the stages (datasets, architectures, methods and their params, export formats and
opsets, the target and its backend, attacks) and the ranges, so a run is refused in one line
before hours of training rather than at its third stage. It sits above the stages (it reads
their registries); the stages themselves take configs that were validated here.
:func:`load_config` reads a TOML (or JSON) file into a validated config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CONFIG_VERSION, BitWidth, ModelConfig, RunConfig, from_dict
from .errors import ConfigError
from .tomlfile import read_toml

WEIGHT_BITS = {32, 8, 4, 2, "ternary", "binary"}
ACT_BITS = {32, 8, 4, 2, "binary"}


def _check_bits(value: BitWidth | None, allowed: set, path: str) -> None:
    if value is not None and value not in allowed:
        choices = ", ".join(str(a) for a in sorted(allowed, key=str))
        raise ConfigError(f"{path}: unsupported bit width {value!r}; choose one of {choices}")


def _check_choice(value: str, allowed: list[str], path: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}: unknown value {value!r}; choose one of {', '.join(allowed)}")


def _check_positive(cfg: Any, path: str, names: list[str]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{path}.{name}: must be positive, got {value!r}")


def check_eps(eps: float, path: str) -> None:
    """A radius on inputs in [0, 1]: beyond 1 it is certainly a mistake (8 meant 8/255, say)."""
    if not 0 <= eps <= 1:
        hint = f"; inputs are in [0, 1], so for {eps:g}/255 write {eps / 255:.6f}" if 1 < eps <= 255 else ""
        raise ConfigError(f"{path}: must be in [0, 1], got {eps:g}{hint}")


@dataclass(frozen=True)
class Validated:
    """A validated run config and what validating it parsed (used as parsed, never again)."""

    config: RunConfig
    compile: Any  # robustq_deploy.compile.CompileOptions: the target description and [compile]


def validate(cfg: RunConfig) -> RunConfig:
    """Check values against the registries and ranges; returns ``cfg`` unchanged."""
    return validated(cfg).config


def validated(cfg: RunConfig) -> Validated:
    """:func:`validate`, returning the parsed compile options too."""
    from .compile import CompileOptions
    from .data import dataset_names
    from .export import export_formats, export_opsets
    from .models import model_names
    from .train import method_names, resolve_params
    from .verify.plan import validate_verify

    if cfg.version != CONFIG_VERSION:
        raise ConfigError(f"version: config version {cfg.version} is not supported (expected {CONFIG_VERSION})")
    _check_choice(cfg.data.dataset, list(dataset_names()), "data.dataset")
    if cfg.model.factory is None:
        if cfg.model.kwargs:
            raise ConfigError("model.kwargs: arguments of model.factory, but no factory is given")
        if cfg.model.arch not in model_names():
            raise ConfigError(f"model.arch: unknown value {cfg.model.arch!r}; choose one of {', '.join(model_names())}, "
                              "or give your own float model as model.factory = \"path/to/file.py:function\"")
    elif cfg.model.arch not in (None, ModelConfig.arch):
        raise ConfigError(f"model.arch {cfg.model.arch!r} and model.factory {cfg.model.factory!r}: give one of them")
    _check_bits(cfg.quant.weight_bits, WEIGHT_BITS, "quant.weight_bits")
    _check_bits(cfg.quant.act_bits, ACT_BITS, "quant.act_bits")
    _check_choice(cfg.quant.granularity, ["per_channel", "per_tensor"], "quant.granularity")
    _check_choice(cfg.quant.scale_mode, ["minmax", "lsq"], "quant.scale_mode")
    for lname, layer in cfg.quant.layers.items():
        _check_bits(layer.weight_bits, WEIGHT_BITS, f"quant.layers.{lname}.weight_bits")
        _check_bits(layer.act_bits, ACT_BITS, f"quant.layers.{lname}.act_bits")
        if layer.weight_clip is not None and not 0 < layer.weight_clip <= 1:
            raise ConfigError(f"quant.layers.{lname}.weight_clip: must be in (0, 1], got {layer.weight_clip!r}")
    _check_choice(cfg.train.method, method_names(), "train.method")
    _check_choice(cfg.train.optimizer, ["adam", "sgd"], "train.optimizer")
    _check_choice(cfg.train.device, ["auto", "cpu", "cuda"], "train.device")
    _check_positive(cfg.train, "train", ["epochs", "batch_size", "lr", "threads"])
    _check_positive(cfg.data, "data", ["train_limit", "test_limit"])
    if not 0 <= cfg.train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay: must be in [0, 1), got {cfg.train.ema_decay!r}")
    if cfg.train.attack.steps < 1:
        raise ConfigError(f"train.attack.steps: must be >= 1, got {cfg.train.attack.steps}")
    check_eps(cfg.train.attack.eps, "train.attack.eps")
    resolve_params(cfg.train.method, cfg.train.params)
    _check_choice(cfg.export.format, export_formats(), "export.format")
    lo, hi = export_opsets()
    if not lo <= cfg.export.opset <= hi:
        raise ConfigError(f"export.opset: {cfg.export.opset} is outside the opsets the exporters support ({lo}-{hi})")
    options = CompileOptions.from_config(cfg.compile)  # the target, its backend's refusals, requant, tuning, batch
    _check_positive(cfg.verify, "verify", ["steps", "restarts", "limit", "batch_size", "threads"])
    for i, e in enumerate((cfg.verify.eps, *cfg.verify.eps_sweep)):
        check_eps(e, "verify.eps" if i == 0 else f"verify.eps_sweep[{i - 1}]")
    validate_verify(cfg.verify)
    for name in ("min_clean", "min_robust", "max_drop", "min_certified"):
        value = getattr(cfg.check, name)
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"check.{name}: must be a fraction in [0, 1], got {value!r}")
    return Validated(cfg, options)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML (or JSON) run configuration."""
    p = Path(path)
    data = read_toml(p, "config")
    try:
        return validate(from_dict(RunConfig, data))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


__all__ = ["ACT_BITS", "WEIGHT_BITS", "Validated", "check_eps", "load_config", "validate", "validated"]
