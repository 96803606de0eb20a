"""The library API: the stages as Python calls, writing the same artifacts as the CLI.

    import robustq_deploy as rq

    ckpt = rq.train("mynet.py:build", "my-digits.npz", {"train": {"method": "qat", "epochs": 2}}, out="run")
    onnx = rq.export(ckpt, "integer", model="mynet.py:build")
    lib = rq.compile(onnx, "x86")
    report = rq.verify(lib, {"attacks": ["pgd"], "eps": 0.1}, model="mynet.py:build")

Each call returns the :class:`~robustq_deploy.manifest.Artifact` it recorded in the output folder's
``manifest.json`` (``.file`` is the written file, ``.meta`` what the CLI prints from). ``model`` is a
factory reference (``"path/to/file.py:build"``, ``"module.path:build"``) or a float ``nn.Module``;
a checkpoint of the user's own model is exported and verified only with the model named again
(checked against the checkpoint; see :func:`robustq_deploy.train.read_checkpoint`).
``robustq_deploy.train`` etc. are both these functions (call them) and the stage packages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .config import CompileConfig, DataConfig, ExportConfig, RunConfig, VerifyConfig, config_from_json, from_dict, to_dict
from .validation import load_config, validate
from .errors import ConfigError
from .manifest import Artifact
from .verify.data import data_section



def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in (
            "kwargs", "params", "layers", "attack_params") else v
    return out


def _config_dict(config: RunConfig | str | Path | dict[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return to_dict(RunConfig())
    if isinstance(config, RunConfig):
        return to_dict(config)
    if isinstance(config, (str, Path)):
        return to_dict(load_config(config))
    if isinstance(config, dict):
        return _merge(to_dict(RunConfig()), config)
    raise ConfigError(f"config: expected a RunConfig, a file or a dict, got {type(config).__name__}")


def run_config(config: RunConfig | str | Path | dict[str, Any] | None) -> RunConfig:
    """A run config from a RunConfig, a TOML / JSON file, or a dict of the TOML's tables (over the
    defaults); validated."""
    return validate(config_from_json(_config_dict(config)))


def quantize(model: nn.Module, spec=None, input_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The quantized twin of a float model (:func:`robustq_deploy.quant.convert.quantize`)."""
    from .quant.convert import quantize as _quantize

    return _quantize(model, spec, input_shape)


def train(model: str | nn.Module | None, data: str | Path | DataConfig | None = None,
          config: RunConfig | str | Path | dict[str, Any] | None = None, out: str | Path = "robustq-out",
          progress: bool = False) -> Artifact:
    """Quantize and train ``model`` (a factory reference, a float module, or None for the config's
    ``[model]``) on ``data`` as ``config`` says; writes ``out/model.safetensors``."""
    from .train import train_stage

    raw = _config_dict(config)
    obj = None
    if isinstance(model, nn.Module):
        obj = model
    elif isinstance(model, str):
        raw = _merge(raw, {"model": {"arch": None, "factory": model}})
    elif model is not None:
        raise ConfigError(f"model: a factory reference or a torch.nn.Module, got {type(model).__name__}")
    if data is not None:
        raw["data"] = to_dict(data_section(data, config_from_json(raw).data))
    return train_stage(validate(config_from_json(raw)), out, progress=progress, model=obj)


def _out(artifact: Artifact | str | Path, out: str | Path | None) -> Path:
    return Path(out) if out is not None else Path(getattr(artifact, "file", artifact)).parent


def _path(artifact: Artifact | str | Path) -> Path:
    return Path(getattr(artifact, "file", artifact))


def export(checkpoint: Artifact | str | Path, format: str = "qdq", out: str | Path | None = None, opset: int = 21,
           model: str | nn.Module | None = None, model_kwargs: dict[str, Any] | None = None) -> Artifact:
    """``robustq export``: writes ``out/model.<format>.onnx`` (``out``: the checkpoint's folder)."""
    from .export import export_stage

    return export_stage(_path(checkpoint), ExportConfig(format=format, opset=opset), _out(checkpoint, out), model,
                        model_kwargs)


def compile(onnx_model: Artifact | str | Path, target: str = "x86", out: str | Path | None = None,
            **options: Any) -> Artifact:
    """``robustq compile``: writes ``out/model.<target>.so`` (``options``: ``[compile]`` keys)."""
    from .compile import compile_stage

    return compile_stage(_path(onnx_model), from_dict(CompileConfig, {"target": target, **options}),
                         _out(onnx_model, out))


def verify(artifact: Artifact | str | Path, config: VerifyConfig | dict[str, Any] | None = None,
           out: str | Path | None = None, data: str | Path | None = None, model: str | nn.Module | None = None,
           model_kwargs: dict[str, Any] | None = None, progress: bool = False) -> Artifact:
    """``robustq verify``: writes ``out/report.json`` (and summary, HTML, JUnit). ``data``: your own
    data to test on (an .npz file or image folder, replacing the training run's ``data.path``)."""
    from .verify import verify_stage

    cfg = config if isinstance(config, VerifyConfig) else from_dict(VerifyConfig, config or {})
    return verify_stage(_path(artifact), cfg, _out(artifact, out), progress=progress,
                        data_path=None if data is None else str(data), model=model, model_kwargs=model_kwargs)


__all__ = ["compile", "export", "quantize", "run_config", "train", "verify"]
