"""Checkpoints and dataset splits: what the stages after training read, below all of them.

A checkpoint is a safetensors file (weights only: nothing is ever unpickled) whose metadata holds
one JSON record: the architecture, number of classes, input shape and the run config the
training method resolved (per-layer bit widths and clipping ranges included), and for the
user's own model where it came from (factory reference and source sha256, never its code).
:func:`save_checkpoint` writes it atomically; :func:`read_checkpoint` rebuilds exactly the
trained twin from it (strictly typed record, bounded input shape, weights from the bytes that
were hashed); :func:`load_checkpoint` does so for a manifest artifact after its hash check.
:func:`load_split` reads a dataset split as the config limits it (training, export calibration
and verification use the same split).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from .config import RunConfig, config_from_json, to_dict
from .data import load_dataset
from .data.registry import OPTIONS as DATA_OPTIONS
from .errors import ArtifactError, ConfigError
from .manifest import Artifact, atomic_path, io_error, read_verified, resolve_input
from .models import build_model, rebuild_model

CHECKPOINT_NAME = "model.safetensors"


def load_split(cfg: RunConfig, split: str) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Float images in [0,1] and int64 labels of a split, limited as the config says."""
    options = {k: getattr(cfg.data, k) for k in DATA_OPTIONS if k != "data_dir"}
    ds = load_dataset(cfg.data.dataset, split, data_dir=cfg.data.data_dir, **options)
    limit = cfg.data.train_limit if split == "train" else cfg.data.test_limit
    if limit is not None:
        ds = ds.take(limit)
    return torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels.astype("int64")), ds


def save_checkpoint(model: nn.Module, cfg: RunConfig, path: str | Path, metrics: dict[str, Any] | None = None) -> None:
    """Write weights as safetensors (no pickle) with the config in its metadata, atomically."""
    # One metadata key: safetensors writes its metadata map in hash order, so several keys would
    # make the file bytes vary from run to run.
    record = {"arch": model.arch, "num_classes": model.num_classes, "input_shape": list(model.input_shape),
              "config": to_dict(cfg)}
    if getattr(model, "source", None) is not None:  # the user's model: where it came from, never its code
        record["source"] = model.source
    if metrics is not None:
        record["metrics"] = _round_floats(metrics)
    meta = {"robustq": json.dumps(record, sort_keys=True)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def _round_floats(obj: Any) -> Any:
    """Timings vary run to run; keep them out of the checkpoint bytes (they live in the manifest)."""
    if isinstance(obj, dict):
        return {k: _round_floats(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_round_floats(v) for v in obj]
    return obj


# Largest input a checkpoint may declare (elements per example): refuses absurd shapes before
# a model is built from them.
MAX_INPUT_ELEMENTS = 1 << 24


def _checkpoint_record(path: Path, data: bytes) -> dict[str, Any]:
    """The ``robustq`` metadata record of a safetensors file's header, strictly typed."""
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        record = json.loads(header["__metadata__"]["robustq"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a robustq checkpoint (no readable robustq metadata: {type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise ArtifactError(f"{path}: not a robustq checkpoint (metadata is not an object)")
    problems = [k for k, ok in (("arch", isinstance(record.get("arch"), str)),
                                ("num_classes", isinstance(record.get("num_classes"), int)
                                 and not isinstance(record.get("num_classes"), bool) and record.get("num_classes") > 0),
                                ("input_shape", isinstance(record.get("input_shape"), list) and record.get("input_shape")
                                 and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                         for d in record.get("input_shape"))),
                                ("config", isinstance(record.get("config"), dict))) if not ok]
    if problems:
        raise ArtifactError(f"{path}: malformed checkpoint metadata ({', '.join(problems)} missing or of the wrong type)")
    size = int(np.prod(record["input_shape"], dtype=object))
    if size > MAX_INPUT_ELEMENTS:
        raise ArtifactError(f"{path}: checkpoint declares input shape {record['input_shape']} ({size:,} elements per "
                            f"example, more than {MAX_INPUT_ELEMENTS:,}); refusing to build it")
    return record


def read_checkpoint(path: str | Path, sha256: str | None = None, model: str | nn.Module | None = None,
                    kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, RunConfig]:
    """Rebuild the twin from a safetensors checkpoint (weights only; nothing is unpickled). With
    ``sha256`` the weights come from exactly the bytes that match it (one read).

    A checkpoint of the user's own model needs ``model``: the factory reference (checked against
    the checkpoint's, with ``kwargs`` when given) or the float module it was trained from; the
    checkpoint alone never causes code to be imported."""
    from safetensors.torch import load as load_bytes

    path = Path(path)
    if sha256 is not None:
        data = read_verified(path, sha256)
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise io_error(exc, path) from None
    record = _checkpoint_record(path, data)
    try:
        state = load_bytes(data)
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ArtifactError(f"{path}: not a robustq checkpoint ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    try:
        cfg = config_from_json(record["config"])
    except ConfigError as exc:
        raise ArtifactError(f"{path}: malformed checkpoint config ({exc})") from None
    shape = tuple(record["input_shape"])
    if "source" in record:  # the user's model: rebuilt only from the factory or module the caller names
        twin = rebuild_model(record["source"], model, kwargs, cfg.quant, record["num_classes"], shape, str(path))
    elif model is not None:
        raise ArtifactError(f"{path}: a built-in {record['arch']!r} model; a model factory is not used")
    else:
        try:
            twin = build_model(record["arch"], cfg.quant, record["num_classes"], shape)
        except ConfigError as exc:
            raise ArtifactError(f"{path}: cannot rebuild the model ({exc})") from None
    try:
        twin.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not fit architecture {record['arch']!r} ({str(exc).splitlines()[0]})") from None
    twin.eval()
    return twin, cfg


def checkpoint_metrics(path: str | Path) -> dict[str, Any]:
    """The training metrics stored in a checkpoint's metadata (empty if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("robustq", "{}")).get("metrics", {})


def load_checkpoint(path: str | Path, model: str | nn.Module | None = None,
                    kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, RunConfig, Artifact]:
    """A checkpoint artifact after its manifest hash check (``model``: see :func:`read_checkpoint`)."""
    art = resolve_input(path, kind="checkpoint")
    twin, cfg = read_checkpoint(art.file, art.sha256, model, kwargs)
    return twin, cfg, art


__all__ = ["CHECKPOINT_NAME", "MAX_INPUT_ELEMENTS", "checkpoint_metrics", "load_checkpoint", "load_split",
           "read_checkpoint", "save_checkpoint"]
