"""Resumable training: the loop's whole state after each epoch, in one safetensors file.

A stopped run (killed, out of time, machine gone) started again with the same config continues
after its last finished epoch and ends with the same weights, bit for bit, as a run that was never
stopped. The file holds the weights and buffers, the optimizer moments, the learning-rate
schedule, the weight average, the loop's and torch's random generators, the method's own state
(:meth:`~.base.Method.state_dict`, e.g. ODG-Q's replayed perturbations) and the history so far.

Nothing is unpickled: tensors are safetensors entries and everything else is JSON in its
metadata. The file names the run it belongs to by a hash of the run config; a state of another
run is set aside with a note, never loaded. It is written atomically after every epoch but the
last and removed once training ends.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import RunConfig, to_dict
from ..errors import ArtifactError
from ..manifest import atomic_path
from ..progress import note
from .distributed import is_main

STATE_SUFFIX = ".train-state.safetensors"


def state_path_for(checkpoint: str | Path) -> Path:
    """Where the training state of the run that writes ``checkpoint`` lives (beside it)."""
    p = Path(checkpoint)
    return p.with_name(p.stem + STATE_SUFFIX)


def run_fingerprint(cfg: RunConfig) -> str:
    """Hash of everything that shapes the trained weights (all of the run config)."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()


def _split_state(prefix: str, state: dict[Any, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move the tensors of a (nested) state dict into ``tensors`` under unique names; return the
    rest as JSON data in which each tensor is a ``{"__tensor__": name}`` placeholder."""
    rest: dict[str, Any] = {}
    for i, (key, value) in enumerate(state.items()):
        if torch.is_tensor(value):
            name = f"{prefix}.{i}"
            tensors[name] = value.detach().cpu().contiguous()
            rest[str(key)] = {"__tensor__": name}
        elif isinstance(value, dict):
            rest[str(key)] = {"__dict__": _split_state(f"{prefix}.{i}", value, tensors),
                              "int_keys": all(isinstance(k, int) for k in value)}
        else:
            rest[str(key)] = value
    return rest


def _join_state(rest: dict[str, Any], tensors: dict[str, torch.Tensor], int_keys: bool = False) -> dict[Any, Any]:
    """Inverse of :func:`_split_state`."""
    out: dict[Any, Any] = {}
    for key, value in rest.items():
        k = int(key) if int_keys else key
        if isinstance(value, dict) and "__tensor__" in value:
            out[k] = tensors[value["__tensor__"]]
        elif isinstance(value, dict) and "__dict__" in value:
            out[k] = _join_state(value["__dict__"], tensors, value["int_keys"])
        else:
            out[k] = value
    return out


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


class Resume:
    """Where a run keeps its per-epoch state, and the run's clock across restarts.

    ``elapsed()`` is the wall and CPU time of the whole run: the time before the last restart (as
    saved) plus the time since it resumed. The repeated set-up of a resumed run (loading data,
    the method's ``prepare``) is not counted twice."""

    def __init__(self, path: str | Path | None, fingerprint: str):
        self.path = Path(path) if path else None
        self.fingerprint = fingerprint
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        self._prior = (0.0, 0.0)

    def elapsed(self) -> tuple[float, float]:
        return (self._prior[0] + time.perf_counter() - self._t0, self._prior[1] + time.process_time() - self._c0)

    def save(self, parts: dict[str, Any], epoch: int, step: int, history: list[dict[str, Any]]) -> None:
        """Write the state after ``epoch`` (count of finished epochs) atomically."""
        tensors: dict[str, torch.Tensor] = {}
        wall, cpu = self.elapsed()
        data: dict[str, Any] = {"fingerprint": self.fingerprint, "epoch": epoch, "step": step, "history": history,
                                "seconds": wall, "cpu_seconds": cpu}
        model, method, ema = parts["model"], parts["method"], parts["ema"]
        data["model"] = _split_state("model", dict(model.state_dict()), tensors)
        data["optimizer"] = _split_state("optimizer", parts["optimizer"].state_dict(), tensors)
        data["scheduler"] = parts["scheduler"].state_dict()
        data["method"] = _split_state("method", method.state_dict(), tensors)
        tensors["rng.loop"] = parts["generator"].get_state()
        for name, state in _rng_states(parts["device"]).items():
            tensors[f"rng.{name}"] = state
        if ema is not None:
            data["ema_updates"] = ema.updates
            for i, avg in enumerate(ema.avg):
                tensors[f"ema.{i}"] = avg.detach().cpu().contiguous()
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata={"robustq_train_state": json.dumps(data, sort_keys=True)})

    def load(self, parts: dict[str, Any]) -> tuple[int, int, list[dict[str, Any]]] | None:
        """Restore ``parts`` from the saved state; returns (epoch, step, history), or None if there
        is no state of this run."""
        if not self.path.exists():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                data = json.loads((f.metadata() or {})["robustq_train_state"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise ArtifactError(f"{self.path}: unreadable training state ({str(exc).splitlines()[0]}); "
                                "delete it to train from the start") from None
        if data.get("fingerprint") != self.fingerprint:
            if is_main():  # under torchrun every process reads the file; one moves it
                stale = self.path.with_name(self.path.name + ".stale")
                self.path.replace(stale)
                note(f"{self.path}: training state of another run config set aside as {stale.name}", True)
            return None
        model, method, ema, device = parts["model"], parts["method"], parts["ema"], parts["device"]
        model.load_state_dict(_join_state(data["model"], tensors), strict=True)
        parts["optimizer"].load_state_dict(_join_state(data["optimizer"], tensors))
        parts["scheduler"].load_state_dict(data["scheduler"])
        method.load_state_dict(_join_state(data["method"], tensors))
        parts["generator"].set_state(tensors["rng.loop"])
        torch.set_rng_state(tensors["rng.torch"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        if ema is not None:
            ema.updates = data["ema_updates"]
            for i, avg in enumerate(ema.avg):
                avg.copy_(tensors[f"ema.{i}"])
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        self._prior = (data["seconds"], data["cpu_seconds"])
        return data["epoch"], data["step"], data["history"]
