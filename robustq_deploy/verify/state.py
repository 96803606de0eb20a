"""Resumable verification: finished units of work saved in one atomic state file.

A verification is a list of named *units* (one batch of one evaluation, or one check). Each unit
returns per-point tensors and JSON scalars; :class:`RunState` stores them in
``OUT/verify.state.safetensors`` (tensors, with the scalars and a fingerprint in the metadata),
rewritten atomically after every unit. A rerun with the same fingerprint (artifact hashes, engines,
config, number of points) skips the units already there; every unit draws its randomness from a
generator seeded by the run seed and the unit's name, so a resumed run gives the same result as an
uninterrupted one. The file is removed once the report is written.

The state lives in the artifact folder, so it is sealed (:mod:`robustq_deploy.seal`): an HMAC
with this user's key over the fingerprint, the scalars and every tensor. A state whose seal does
not verify (edited, or written by someone else) is set aside and the run starts afresh.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..manifest import atomic_path, dumps_json
from ..seal import seal, unseal_ok

STATE_NAME = "verify.state.safetensors"


def seeded_generator(seed: int, *keys: str) -> torch.Generator:
    """A CPU generator whose seed depends only on ``seed`` and ``keys``."""
    digest = hashlib.sha256(json.dumps([seed, *keys]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def fingerprint(data: Any) -> str:
    return hashlib.sha256(dumps_json(data).encode()).hexdigest()


def _sealed_parts(fp: str, scalars: str, tensors: dict[str, torch.Tensor]) -> list[bytes]:
    parts = [fp.encode(), scalars.encode()]
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        parts += [name.encode(), str(t.dtype).encode(), str(list(t.shape)).encode(), t.numpy().tobytes()]
    return parts


class RunState:
    """Unit results of one verification, persisted in ``out_dir``."""

    def __init__(self, out_dir: str | Path | None, fp: str):
        self.path = Path(out_dir) / STATE_NAME if out_dir is not None else None  # None: in memory only
        self.fingerprint = fp
        self.tensors: dict[str, torch.Tensor] = {}
        self.scalars: dict[str, Any] = {}
        self.resumed_units = 0
        self.discarded: str | None = None  # why an existing state file was not used

    def load(self) -> "RunState":
        if self.path is None or not self.path.exists():
            return self
        try:
            from safetensors import safe_open

            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(self.path))
            scalars = json.loads(meta.get("scalars", "{}"))
        except (SafetensorError, OSError, ValueError) as exc:
            self.discarded = f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            return self
        if meta.get("fingerprint") != self.fingerprint:
            self.discarded = "made by a different artifact, engine set or configuration"
            return self
        if not unseal_ok(meta.get("seal"), *_sealed_parts(self.fingerprint, meta.get("scalars", "{}"), tensors)):
            self.discarded = "its seal does not verify (edited, or not written by this user's robustq)"
            return self
        self.tensors, self.scalars = tensors, scalars
        self.resumed_units = len(scalars)
        return self

    def done(self, unit: str) -> bool:
        return unit in self.scalars

    def put(self, unit: str, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        """Record a finished unit and rewrite the state file atomically."""
        for k, v in tensors.items():
            self.tensors[f"{unit}/{k}"] = v.detach().contiguous().clone()
        self.scalars[unit] = scalars
        if self.path is None:
            return
        scalars = json.dumps(self.scalars, sort_keys=True)
        meta = {"fingerprint": self.fingerprint, "scalars": scalars,
                "seal": seal(*_sealed_parts(self.fingerprint, scalars, self.tensors))}
        with atomic_path(self.path) as tmp:
            save_file(self.tensors, str(tmp), metadata=meta)

    def get(self, unit: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        prefix = f"{unit}/"
        return ({k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}, self.scalars[unit])

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
