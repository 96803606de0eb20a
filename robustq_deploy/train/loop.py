"""The training loop all methods share, and the ``train`` stage (config -> checkpoint artifact)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import RunConfig, TrainConfig, config_from_json, to_dict
from ..data import load_dataset
from ..errors import ArtifactError, ConfigError
from ..manifest import Artifact, Manifest, atomic_path, resolve_input
from ..models import build_model
from ..progress import bar as progress_bar, note
from ..quant import quant_layers
from .base import Method, StepContext, make_method

CHECKPOINT_NAME = "model.safetensors"


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model: nn.Module, method: Method, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
        eval_data: tuple[torch.Tensor, torch.Tensor] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train ``model`` in place with ``method``: shuffled mini-batches, cosine learning rate,
    eps warm-up; returns per-epoch history (loss, clean test accuracy, seconds)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    history = []
    step = 0
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        warm = cfg.eps_warmup_epochs
        eps = cfg.attack.eps * min(1.0, (epoch + 1) / warm) if warm else cfg.attack.eps
        order = torch.randperm(len(x), generator=gen)
        model.train()
        total, seen = 0.0, 0
        bar = progress_bar(range(steps_per_epoch), f"train {method.name} epoch {epoch + 1}/{cfg.epochs}",
                           progress, unit="batch")
        for b in bar:
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            loss = method.loss(model, xb, yb, StepContext(epoch, step, eps, gen))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += float(loss) * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        bar.close()
        method.after_epoch(model, epoch)
        row = {"epoch": epoch + 1, "loss": total / seen, "eps": eps, "seconds": time.perf_counter() - t0}
        if eval_data is not None:
            row["test_acc"] = accuracy(model, *eval_data)
        history.append(row)
        acc = f", test acc {row['test_acc']:.4f}" if "test_acc" in row else ""
        note(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}{acc} ({row['seconds']:.1f} s)", progress)
    return history


def load_split(cfg: RunConfig, split: str) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Float images in [0,1] and int64 labels of a split, limited as the config says."""
    ds = load_dataset(cfg.data.dataset, split, data_dir=cfg.data.data_dir)
    limit = cfg.data.train_limit if split == "train" else cfg.data.test_limit
    if limit is not None:
        ds = ds.take(limit)
    return torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels.astype("int64")), ds


def train_model(cfg: RunConfig, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build and train the model of ``cfg``; returns the model and training metrics."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    x, y, ds = load_split(cfg, "train")
    tx, ty, _ = load_split(cfg, "test")
    model = build_model(cfg.model.arch, cfg.quant, len(ds.classes), ds.input_shape)
    method = make_method(cfg.train)
    if method.requires_quant and not any(layer.quantized for _, layer in quant_layers(model)):
        raise ConfigError(f"train.method: {method.name!r} needs a quantized model, but [quant] is float (32 bits)")
    model = method.prepare(model, x, y)
    t0 = time.perf_counter()
    history = fit(model, method, x, y, cfg.train, eval_data=(tx, ty), progress=progress)
    metrics = {"history": history, "train_seconds": time.perf_counter() - t0}
    metrics.update(method.finish(model))
    metrics["test_acc"] = accuracy(model, tx, ty)
    return model, metrics


def save_checkpoint(model: nn.Module, cfg: RunConfig, path: str | Path, metrics: dict[str, Any] | None = None) -> None:
    """Write weights as safetensors (no pickle) with the config in its metadata, atomically."""
    meta = {
        "robustq": json.dumps({
            "arch": model.arch, "num_classes": model.num_classes, "input_shape": list(model.input_shape),
            "config": to_dict(cfg),
        }, sort_keys=True),
    }
    if metrics is not None:
        meta["metrics"] = json.dumps(_round_floats(metrics), sort_keys=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def _round_floats(obj: Any) -> Any:
    """Timings vary run to run; keep them out of the checkpoint bytes (they live in the manifest)."""
    if isinstance(obj, dict):
        return {k: _round_floats(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_round_floats(v) for v in obj]
    return obj


def read_checkpoint(path: str | Path) -> tuple[nn.Module, RunConfig]:
    """Rebuild the twin from a safetensors checkpoint (weights only; nothing is unpickled)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["robustq"])
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ArtifactError(f"{path}: not a robustq checkpoint ({str(exc).splitlines()[0]})") from None
    cfg = config_from_json(meta["config"])
    model = build_model(meta["arch"], cfg.quant, meta["num_classes"], tuple(meta["input_shape"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not fit architecture {meta['arch']!r} ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, cfg


def load_checkpoint(path: str | Path) -> tuple[nn.Module, RunConfig, Artifact]:
    """A checkpoint artifact after its manifest hash check."""
    art = resolve_input(path, kind="checkpoint")
    model, cfg = read_checkpoint(art.file)
    return model, cfg, art


def train_stage(cfg: RunConfig, out_dir: str | Path, progress: bool = True) -> Artifact:
    """Stage 1: train per ``cfg`` and record ``out_dir/model.safetensors`` in the manifest."""
    out = Path(out_dir)
    model, metrics = train_model(cfg, progress=progress)
    path = out / CHECKPOINT_NAME
    save_checkpoint(model, cfg, path, metrics)
    meta = {"test_acc": metrics["test_acc"], "train_seconds": metrics["train_seconds"],
            "history": metrics["history"]}
    meta.update({k: v for k, v in metrics.items() if k not in meta and k != "history"})
    return Manifest.load(out).add(path, "checkpoint", "train", config=to_dict(cfg), meta=meta)
