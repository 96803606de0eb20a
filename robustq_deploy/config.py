"""Typed, versioned pipeline configuration.

A run is described by one :class:`RunConfig`, a tree of frozen dataclasses that round-trips
through TOML/JSON. Parsing is strict: an unknown key, a wrong type or an invalid value raises
:class:`~robustq_deploy.errors.ConfigError` naming the dotted key (``train.epochs``), so a typo
never silently falls back to a default.

To add an option, add a field with a default to the right dataclass; ``from_dict`` and
``to_dict`` pick it up from the type hints. Values that depend on a registry (dataset, model
architecture, training method, export format, target) are checked against that registry by
:func:`validate`, which imports the registries lazily to keep this module dependency-free.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .errors import ConfigError

CONFIG_VERSION = 1

BitWidth = Union[int, str]  # 32 (float), 8, 4, 2, "ternary", "binary"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    train_limit: int | None = None  # use only the first N training examples
    test_limit: int | None = None  # evaluate on the first N test examples
    # your own images (dataset "npz" or "folder", robustq_deploy.data.own)
    path: str | None = None  # the .npz file, or the folder with one subfolder of images per class
    size: tuple[int, ...] | None = None  # folder: resize every image to [H, W]
    channels: int | None = None  # folder: 1 (grayscale) or 3 (RGB); default: as the images are
    test_fraction: float = 0.2  # share held out for testing when the data has no test split of its own
    split_seed: int = 0  # seed of that split


@dataclass(frozen=True)
class ModelConfig:
    arch: str | None = "digits-cnn"  # a built-in architecture (None: the model comes from elsewhere)
    factory: str | None = None  # your own float model: "path/to/file.py:build" or "module.path:build"
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the factory


@dataclass(frozen=True)
class LayerQuantConfig:
    """Per-layer override of the model-wide quantization (mixed precision)."""

    weight_bits: BitWidth | None = None
    act_bits: BitWidth | None = None
    # clipping range of integer weights as a fraction of max|W| (0 < c <= 1); None: no clipping
    weight_clip: float | None = None


@dataclass(frozen=True)
class QuantConfig:
    weight_bits: BitWidth = 8
    act_bits: BitWidth = 8
    granularity: str = "per_channel"  # weights: "per_channel" or "per_tensor"
    layers: dict[str, LayerQuantConfig] = field(default_factory=dict)
    # integer steps: "minmax" (weights max|W|/qmax, activations an EMA of the batch max) or
    # "lsq" (learned step size, Esser et al. 2020, for weights and non-fixed activations)
    scale_mode: str = "minmax"


@dataclass(frozen=True)
class AttackConfig:
    """An L-inf attack used during training (PGD); step_size defaults to 2.5 * eps / steps."""

    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True


@dataclass(frozen=True)
class TrainConfig:
    method: str = "pgd-at"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" or "sgd"
    weight_decay: float = 0.0
    eps_warmup_epochs: int = 0  # ramp the training eps linearly over the first epochs
    ema_decay: float = 0.0  # exponential moving average of the weights (0: off); the trained model is the average
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    device: str = "auto"  # "auto" (a GPU when present, else the CPU), "cpu" or "cuda"
    attack: AttackConfig = field(default_factory=AttackConfig)
    params: dict[str, Any] = field(default_factory=dict)  # method-specific, typed by the method


@dataclass(frozen=True)
class ExportConfig:
    format: str = "qdq"
    opset: int = 21


@dataclass(frozen=True)
class CompileConfig:
    target: str = "x86"
    tune_trials: int = 0
    requant: str = "auto"  # QDQ layers: "fixed-point", "float" (onnxruntime's), "auto" (by producer)
    batch: int | None = None  # bind symbolic (batch) dims to this size; tuning needs it; None keeps them


@dataclass(frozen=True)
class ValidityConfig:
    """Bounds of the evaluation validity checks (fractions of the attacked points)."""

    max_query_gain: float = 0.01  # points a query attack may break after all gradient attacks (one always may)
    max_eps1_acc: float = 0.05  # accuracy allowed at L-inf eps = 1 (inputs in [0, 1])
    max_zero_grad: float = 0.01  # points whose input gradient is exactly zero
    max_disagree_clean: float = 0.01  # twin vs deployed argmax disagreement, clean inputs
    max_disagree_adv: float = 0.05  # the same on the twin's adversarial inputs
    max_one_class: float = 0.9  # share of the clean points a model may give one class (more: degenerate)
    points: int = 100  # points used by the eps = 1 and determinism checks


@dataclass(frozen=True)
class VerifyConfig:
    budget: str = "standard"  # fast | standard | thorough: the default ensemble (verify/plan.py)
    attacks: tuple[str, ...] = ()  # () = the budget's ensemble
    eps: float = 0.1
    eps_sweep: tuple[float, ...] = ()
    steps: int | None = None  # None: each attack's (or the budget's) own
    restarts: int | None = None
    step_size: float | None = None
    limit: int | None = None  # number of test points attacked; None = the whole test split
    batch_size: int = 256
    seed: int = 0
    engines: tuple[str, ...] = ("onnxruntime", "tvm")
    norm: str = "linf"  # "linf" or "l2"
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # [verify.attack_params.NAME]
    sweep_attacks: tuple[str, ...] = ("pgd",)  # attacks run at every eps of eps_sweep
    float_model: bool = True  # also evaluate the float model (the twin's weights, quantizers off)
    amplification: bool = True  # per-layer error amplification of twin and float model
    device: str | None = None  # HOST:PORT of a TVM RPC server that runs the compiled library
    threads: int | None = None  # torch and onnxruntime intra-op threads; None keeps their defaults
    dataset: str | None = None  # test data; None: the dataset of the checkpoint in the lineage
    twin: str = "auto"  # white-box twin: auto (the checkpoint's when there is one), checkpoint, onnx
    surrogate: str | None = None  # float ONNX file or checkpoint that transfer attacks craft on
    input_range: str = "auto"  # float model inputs: auto (from the graph), unit ([0, 1]) or pixels ([0, 255])
    examples: int = 3  # adversarial examples shown per engine in the report
    validity: ValidityConfig = field(default_factory=ValidityConfig)
    certify: str | None = None  # "interval", "linear" or "complete": certify the deployed graph too


@dataclass(frozen=True)
class CheckConfig:
    min_clean: float | None = None
    min_robust: float | None = None
    max_drop: float | None = None
    min_certified: float | None = None


@dataclass(frozen=True)
class RunConfig:
    version: int = CONFIG_VERSION
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    check: CheckConfig = field(default_factory=CheckConfig)


# --------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and convert it (lists to tuples etc.)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{path}: must not be empty")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"{path}: expected {names}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        return from_dict(tp, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        _key_tp, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in this module


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in [{path}]" if path else ""
        keys = ", ".join(f"'{k}'" for k in unknown)
        raise ConfigError(f"unknown key {keys}{where}; known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{path}.{name}" if path else name)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """JSON-ready plain data of a config object (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for nested configs: ``replace(cfg, **{"train.epochs": 3})``."""
    nested: dict[str, dict[str, Any]] = {}
    direct = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[key] = value
    for head, sub in nested.items():
        direct[head] = replace(getattr(obj, head), **sub)
    return dataclasses.replace(obj, **direct)


# --------------------------------------------------------------------------- validation

_WEIGHT_BITS = {32, 8, 4, 2, "ternary", "binary"}
_ACT_BITS = {32, 8, 4, 2, "binary"}


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


def validate(cfg: RunConfig) -> RunConfig:
    """Check values against the registries and ranges; returns ``cfg`` unchanged."""
    from .data import dataset_names
    from .export import export_formats, export_opsets
    from .models import model_names
    from .train import method_names, resolve_params
    from targets import get_target

    if cfg.version != CONFIG_VERSION:
        raise ConfigError(f"version: config version {cfg.version} is not supported (expected {CONFIG_VERSION})")
    _check_choice(cfg.data.dataset, dataset_names(), "data.dataset")
    if cfg.model.factory is None:
        if cfg.model.kwargs:
            raise ConfigError("model.kwargs: arguments of model.factory, but no factory is given")
        if cfg.model.arch not in model_names():
            raise ConfigError(f"model.arch: unknown value {cfg.model.arch!r}; choose one of {', '.join(model_names())}, "
                              "or give your own float model as model.factory = \"path/to/file.py:function\"")
    elif cfg.model.arch not in (None, ModelConfig.arch):
        raise ConfigError(f"model.arch {cfg.model.arch!r} and model.factory {cfg.model.factory!r}: give one of them")
    _check_bits(cfg.quant.weight_bits, _WEIGHT_BITS, "quant.weight_bits")
    _check_bits(cfg.quant.act_bits, _ACT_BITS, "quant.act_bits")
    _check_choice(cfg.quant.granularity, ["per_channel", "per_tensor"], "quant.granularity")
    _check_choice(cfg.quant.scale_mode, ["minmax", "lsq"], "quant.scale_mode")
    for lname, layer in cfg.quant.layers.items():
        _check_bits(layer.weight_bits, _WEIGHT_BITS, f"quant.layers.{lname}.weight_bits")
        _check_bits(layer.act_bits, _ACT_BITS, f"quant.layers.{lname}.act_bits")
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
    _check_eps(cfg.train.attack.eps, "train.attack.eps")
    resolve_params(cfg.train.method, cfg.train.params)
    _check_choice(cfg.export.format, export_formats(), "export.format")
    lo, hi = export_opsets()
    if not lo <= cfg.export.opset <= hi:
        raise ConfigError(f"export.opset: {cfg.export.opset} is outside the opsets the exporters support ({lo}-{hi})")
    try:
        get_target(cfg.compile.target)
    except ConfigError as exc:
        raise ConfigError(f"compile.target: {exc}") from None
    _check_choice(cfg.compile.requant, ["auto", "fixed-point", "float"], "compile.requant")
    if cfg.compile.tune_trials < 0:
        raise ConfigError(f"compile.tune_trials: must be >= 0, got {cfg.compile.tune_trials}")
    _check_positive(cfg.compile, "compile", ["batch"])
    if cfg.compile.tune_trials and cfg.compile.batch is None:
        raise ConfigError("compile.tune_trials: tuning needs static shapes; set compile.batch, the batch size to tune for")
    _check_positive(cfg.verify, "verify", ["steps", "restarts", "limit", "batch_size"])
    for i, e in enumerate((cfg.verify.eps, *cfg.verify.eps_sweep)):
        _check_eps(e, "verify.eps" if i == 0 else f"verify.eps_sweep[{i - 1}]")
    if cfg.verify.certify is not None:
        _check_choice(cfg.verify.certify, ["interval", "linear", "complete"], "verify.certify")
    from .verify.plan import validate_verify

    validate_verify(cfg.verify)
    for name in ("min_clean", "min_robust", "max_drop"):
        value = getattr(cfg.check, name)
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"check.{name}: must be a fraction in [0, 1], got {value!r}")
    return cfg


def _check_eps(eps: float, path: str) -> None:
    """A radius on inputs in [0, 1]: beyond 1 it is certainly a mistake (8 meant 8/255, say)."""
    if not 0 <= eps <= 1:
        hint = f"; inputs are in [0, 1], so for {eps:g}/255 write {eps / 255:.6f}" if 1 < eps <= 255 else ""
        raise ConfigError(f"{path}: must be in [0, 1], got {eps:g}{hint}")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML (or JSON) run configuration."""
    p = Path(path)
    try:
        text = p.read_bytes().decode()
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: not UTF-8 text "
                          f"(byte {exc.start})") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {exc}") from None
    try:
        return validate(from_dict(RunConfig, data))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def config_from_json(data: dict[str, Any]) -> RunConfig:
    """Rebuild a config stored in a manifest or checkpoint."""
    return from_dict(RunConfig, data)
