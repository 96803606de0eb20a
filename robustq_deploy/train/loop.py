"""The training loop all methods share, and the ``train`` stage (config -> checkpoint artifact).

:func:`fit` runs shuffled mini-batches with a cosine learning rate, an eps warm-up and an
optional exponential moving average of the weights (``train.ema_decay``) on the chosen device
(``train.device``: a GPU when present under ``auto``), data-parallel under torchrun
(:mod:`.distributed`). :func:`train_model` builds the model, lets the method prepare
it, fits it and finishes it; :func:`train_stage` writes the checkpoint (checkpoint I/O and the
dataset splits are :mod:`robustq_deploy.checkpoint`, which the later stages read without
importing training).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..checkpoint import CHECKPOINT_NAME, load_split, save_checkpoint
from ..config import ModelConfig, QuantConfig, RunConfig, TrainConfig, replace, to_dict
from ..errors import ConfigError
from ..manifest import Artifact, Manifest, ensure_writable, publishing
from ..models import build_model_for, object_source, twin_of
from ..progress import bar as progress_bar, note
from ..quant import quant_layers
from . import distributed as D
from .base import Method, PrepareContext, StepContext, make_method
from .diagnostics import diagnose
from .resume import Resume, run_fingerprint, state_path_for

DIAGNOSTIC_POINTS = 256  # test points of the error-amplification record in the metrics
DIAGNOSTIC_EPS = 0.1  # perturbation radius of that record when the run trains without attacks


def resolve_device(name: str) -> torch.device:
    """``auto``: the current GPU when one is present, else the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' asked for, but no GPU is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and D.active():
        return torch.device("cuda", D.rank() % torch.cuda.device_count())
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    dev = model_device(model)
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i:i + batch_size].to(dev)).argmax(1).cpu()
        correct += int((pred == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def epoch_eps(cfg: TrainConfig, epoch: int) -> float:
    """Training radius of ``epoch`` (0-based): linear warm-up over ``eps_warmup_epochs``."""
    warm = cfg.eps_warmup_epochs
    return cfg.attack.eps * min(1.0, (epoch + 1) / warm) if warm else cfg.attack.eps


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters (Polyak averaging).

    After step ``t`` (1-based) every parameter average moves as ``a <- d_t * a + (1 - d_t) * w``
    with ``d_t = min(decay, (1 + t) / (10 + t))``, the usual warm-up that keeps the first steps'
    random weights from dominating. Buffers (observed activation scales) are not averaged: they
    stay those of the live model. :meth:`swapped` evaluates with the averages in place;
    :meth:`copy_to` makes them the model's weights.

    With the loop's cosine schedule, whose rate falls to 0, the average ends close to the last
    weights: ODG-Q on MNIST (bench preset ``small-tuned``, decay 0.999) gave the same clean, PGD
    and worst-case accuracy with and without it, although the per-epoch accuracies on the way
    differed. It matters for runs stopped while the rate is still high.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.is_floating_point()]
        self.avg = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], 1 - d)

    @torch.no_grad()
    def _swap(self) -> None:
        for p, a in zip(self.params, self.avg):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)

    @contextlib.contextmanager
    def swapped(self):
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, a in zip(self.params, self.avg):
            p.copy_(a)


def fit(model: nn.Module, method: Method, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
        eval_data: tuple[torch.Tensor, torch.Tensor] | None = None, progress: bool = True,
        resume: Resume | None = None) -> list[dict[str, Any]]:
    """Train ``model`` (already on its device) in place with ``method``; returns the per-epoch
    history (loss, eps, clean test accuracy, seconds).

    With ``resume``, training continues after the last epoch saved there (if it holds a state of
    this run), the state is saved after every epoch but the last, and removed at the end.

    Under torch.distributed every process walks the same seeded permutation and trains on rows
    ``rank::world`` of each global batch of ``cfg.batch_size``; each process's loss is weighted
    by its share of the global batch, so DDP's gradient average is the global-batch mean. A last
    global batch with fewer rows than processes is skipped (it would leave a process empty).
    """
    device = model_device(model)
    net = D.wrap(model, device)
    world = D.world_size()
    show = progress and D.is_main()
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    history: list[dict[str, Any]] = []
    step = start = 0
    parts = {"model": model, "method": method, "optimizer": opt, "scheduler": sched, "ema": ema,
             "generator": gen, "device": device}
    if resume is not None:
        restored = resume.load(parts)
        if restored is not None:
            start, step, history = restored
            note(f"resuming {method.name} after epoch {start}/{cfg.epochs} from {resume.path}", show)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        eps = epoch_eps(cfg, epoch)
        order = torch.randperm(len(x), generator=gen)
        method.before_epoch(model, epoch)
        model.train()
        total = torch.zeros(2, dtype=torch.float64)
        bar = progress_bar(range(steps_per_epoch), f"train {method.name} epoch {epoch + 1}/{cfg.epochs}",
                           show, unit="batch")
        for b in bar:
            batch = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if len(batch) < world:
                continue
            idx = D.shard(batch)
            xb, yb = x[idx].to(device), y[idx].to(device)
            ctx = StepContext(epoch, step, eps, gen, idx)
            loss = method.loss(net, xb, yb, ctx)
            opt.zero_grad(set_to_none=True)
            (loss * (len(idx) * world / len(batch)) if world > 1 else loss).backward()
            method.after_backward(net, ctx)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update()
            step += 1
            total += torch.tensor([float(loss.detach()) * len(idx), len(idx)], dtype=torch.float64)
            bar.set_postfix(loss=f"{float(total[0] / total[1]):.4f}")
        bar.close()
        method.after_epoch(model, epoch)
        total = D.all_reduce_sum(total.to(device)).cpu()  # NCCL reduces device tensors only
        row = {"epoch": epoch + 1, "loss": float(total[0] / total[1]), "eps": eps,
               "seconds": time.perf_counter() - t0}
        if not math.isfinite(row["loss"]):
            raise ConfigError(f"train: the loss became {row['loss']} in epoch {epoch + 1} (training diverged); "
                              f"lower train.lr (now {cfg.lr:g})")
        if eval_data is not None:
            with ema.swapped() if ema is not None else contextlib.nullcontext():
                row["test_acc"] = accuracy(model, *eval_data)
        history.append(row)
        acc = f", test acc {row['test_acc']:.4f}" if "test_acc" in row else ""
        note(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}{acc} ({row['seconds']:.1f} s)", show)
        if resume is not None and D.is_main() and epoch + 1 < cfg.epochs:
            resume.save(parts, epoch + 1, step, history)
    if ema is not None:
        ema.copy_to()
    return history


class TrainResult(NamedTuple):
    model: nn.Module  # trained, on the CPU, in eval mode
    metrics: dict[str, Any]
    config: RunConfig  # the run config as the method resolved it (rebuilds the model)


def quant_problem(model: nn.Module, quant: QuantConfig, method: Method, act_only: bool = False) -> str | None:
    """Why ``method`` cannot train ``model`` as ``[quant]`` says (None: it can): a quantized method
    on a float ``[quant]``, or ``[quant]`` bits that leave the model with no quantized layer
    (``act_only``: a layer that quantizes only its input counts as quantized)."""
    if any(layer.quantized or (act_only and layer.in_q.enabled) for _, layer in quant_layers(model)):
        return None
    widths = {(quant.weight_bits, quant.act_bits)} | {
        (o.weight_bits or quant.weight_bits, o.act_bits or quant.act_bits) for o in quant.layers.values()}
    said = f"[quant] sets weight_bits = {quant.weight_bits!r} and act_bits = {quant.act_bits!r}" + (
        f" ({len(quant.layers)} per-layer override(s))" if quant.layers else "")
    if all(w == 32 and a == 32 for w, a in widths):
        if method.requires_quant:
            return f"train.method: {method.name!r} trains a quantized model, but {said}: float"
        return None
    if not quant_layers(model):
        return f"{said}, but the model has no quantized layer (no QConv2d / QLinear; give your float model as " \
               "[model] factory so it is quantized)"
    return f"{said}, but no layer ends up quantized: a layer is integer only with integer weights and integer " \
           "inputs (both below 32 bits)"


def train_model(cfg: RunConfig, progress: bool = True, state_path: str | Path | None = None,
                model: nn.Module | None = None, act_only: bool = False) -> TrainResult:
    """Build, prepare, train and finish the model of ``cfg``.

    ``act_only``: also train models that quantize only their activations (float weights), a
    research setting that separates activation quantization from weight quantization; no integer
    exporter accepts them.

    ``model``: a float model given as a Python object, quantized here, instead of ``[model]``.
    With ``state_path`` the run is resumable (:mod:`.resume`): it keeps its per-epoch state there
    and, started again with the same config, continues where it stopped; its ``train_seconds``
    then count the time of every part of the run once. The state stays until the caller has
    saved the model and removes it (a kill before the checkpoint is safe loses no epoch)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    D.init_from_env(device)
    device = resolve_device(cfg.train.device)  # a GPU per process once the group is known
    torch.manual_seed(cfg.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    x, y, ds = load_split(cfg, "train")
    tx, ty, _ = load_split(cfg, "test")
    method = make_method(cfg.train)
    if model is not None:
        model = twin_of(model, cfg.quant, len(ds.classes), ds.input_shape, object_source(model))
        cfg = replace(cfg, model=ModelConfig(arch=None))
    else:
        model = build_model_for(cfg.model, cfg.quant, len(ds.classes), ds.input_shape)
        if cfg.model.factory is not None:
            cfg = replace(cfg, **{"model.arch": None})
    problem = quant_problem(model, cfg.quant, method, act_only)
    if problem:
        raise ConfigError(problem)
    fingerprint = run_fingerprint(cfg)
    if getattr(model, "source", None):  # the user's model: its source file and layers shape the weights too
        fingerprint = hashlib.sha256(json.dumps([fingerprint, model.source], sort_keys=True).encode()).hexdigest()
    clock = Resume(state_path, fingerprint)
    model = method.prepare(model.to(device), PrepareContext(cfg, x, y, device, progress)).to(device)
    history = fit(model, method, x, y, cfg.train, eval_data=(tx, ty), progress=progress,
                  resume=clock if state_path else None)
    metrics: dict[str, Any] = {"history": history}
    metrics.update(method.finish(model))
    # CPU seconds of all threads: less disturbed than wall time by a busy machine
    metrics["train_seconds"], metrics["train_cpu_seconds"] = clock.elapsed()
    model = model.cpu().eval()
    metrics["test_acc"] = accuracy(model, tx, ty)
    metrics["diagnostics"] = diagnose(model, tx[:DIAGNOSTIC_POINTS], ty[:DIAGNOSTIC_POINTS],
                                      cfg.train.attack.eps or DIAGNOSTIC_EPS)
    return TrainResult(model, metrics, method.run_config(cfg))


def train_stage(cfg: RunConfig, out_dir: str | Path, progress: bool = True, model: nn.Module | None = None) -> Artifact:
    """Stage 1: train per ``cfg`` and record ``out_dir/model.safetensors`` in the manifest
    (``model``: a float model object to quantize and train instead of ``[model]``).

    Resumable: until it ends, the run keeps its per-epoch state in
    ``out_dir/model.train-state.safetensors``; the same command started again continues there.

    Under torchrun, rank 0 writes; every rank returns the recorded artifact."""
    out = ensure_writable(out_dir, create=False)
    path = out / CHECKPOINT_NAME
    state_path = state_path_for(path)
    model, metrics, run_cfg = train_model(cfg, progress=progress, state_path=state_path, model=model)
    if D.is_main():
        meta = {"test_acc": metrics["test_acc"], "train_seconds": metrics["train_seconds"],
                "history": metrics["history"]}
        meta.update({k: v for k, v in metrics.items() if k not in meta})
        with publishing(out) as pub:
            save_checkpoint(model, run_cfg, path, metrics)
            pub.record(path, "checkpoint", "train", config=to_dict(run_cfg), meta=meta)
        state_path.unlink(missing_ok=True)  # only now: the checkpoint and its entry are safely written
    D.barrier()
    return Manifest.load(out).find(path)
