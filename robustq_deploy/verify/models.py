"""The models a verification differentiates: the twins of the deployed artifact and a surrogate.

* the checkpoint twin (``twin``): the PyTorch fake-quant model of the checkpoint in the
  artifact's lineage, when there is one (a model this tool trained);
* the ONNX twin (``onnx-twin``): :class:`robustq_deploy.twin.GraphTwin` of the ONNX graph the
  artifact is or was compiled from, for any model, including ones this tool did not train;
* a surrogate (``--surrogate``): a float ONNX model or a checkpoint the user names, for transfer
  attacks.

``verify.twin`` picks the white-box twin (:attr:`Models.primary`): ``auto`` the checkpoint twin
when there is one, else the ONNX twin. Both are scored on every attack when both exist.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import RunConfig, VerifyConfig
from ..errors import ArtifactError, ConfigError, InputError, RobustqError
from ..manifest import Artifact, find_ancestor, sha256_file
from ..twin import GraphTwin, InputSpec, graph_twin, input_spec, load_model
from .engines import source_onnx

TWIN_NAMES = {"twin": "checkpoint twin (PyTorch fake-quant model)",
              "onnx-twin": "ONNX twin (the deployed graph in PyTorch; attacks differentiate it with float32 sums, "
                           "its scores use the reference's float64 sums)"}


@dataclass
class Models:
    checkpoint: Artifact | None = None
    run_cfg: RunConfig | None = None
    twin: nn.Module | None = None
    onnx: Artifact | None = None
    onnx_twin: GraphTwin | None = None
    onnx_fast: GraphTwin | None = None  # the same graph with float32 sums: what attacks differentiate
    onnx_note: str | None = None  # why there is no ONNX twin
    spec: InputSpec | None = None
    primary: str = "twin"
    surrogate: nn.Module | None = None
    surrogate_info: dict[str, Any] = field(default_factory=dict)

    @property
    def white_box(self) -> nn.Module:
        return self.twin if self.primary == "twin" else self.onnx_twin

    def twins(self) -> dict[str, nn.Module]:
        return {n: m for n, m in (("twin", self.twin), ("onnx-twin", self.onnx_twin)) if m is not None}

    def attack_twins(self) -> dict[str, nn.Module]:
        """The twins attacks differentiate (the ONNX twin with float32 sums: same integers, faster)."""
        return {n: m for n, m in (("twin", self.twin), ("onnx-twin", self.onnx_fast)) if m is not None}


def load_models(art: Artifact, cfg: VerifyConfig, model: Any = None, model_kwargs: dict[str, Any] | None = None) -> Models:
    """Twins of ``art`` as ``cfg.twin`` asks (see the module docstring); ``model`` (with
    ``model_kwargs``) names the factory of the user's own model for its checkpoint."""
    from ..checkpoint import read_checkpoint

    m = Models()
    m.checkpoint = find_ancestor(art, "checkpoint")
    if m.checkpoint is not None:
        m.twin, m.run_cfg = read_checkpoint(m.checkpoint.file, m.checkpoint.sha256, model, model_kwargs)
    m.onnx = source_onnx(art)
    if m.onnx is not None:
        model = load_model(m.onnx.file)
        m.spec = input_spec(model, cfg.input_range)
        try:
            m.onnx_twin = GraphTwin(model, m.spec).eval()
            floats = any(n.op_type in ("Conv", "Gemm", "MatMul") for n in model.graph.node)
            m.onnx_fast = GraphTwin(model, m.spec, precision="fast").eval() if floats else m.onnx_twin
        except RobustqError as exc:
            if m.twin is None or cfg.twin == "onnx":
                raise
            m.onnx_note = str(exc)
    else:
        m.onnx_note = "no ONNX graph in the artifact's lineage"
    if cfg.twin == "checkpoint" and m.twin is None:
        raise ConfigError(f"verify.twin = checkpoint: {art.file} has no checkpoint in its manifest lineage")
    if cfg.twin == "onnx" and m.onnx_twin is None:
        raise ConfigError(f"verify.twin = onnx: {m.onnx_note}")
    if m.twin is None and m.onnx_twin is None:
        raise ArtifactError(f"{art.file}: no checkpoint and no ONNX graph in its lineage to differentiate; "
                            "verify the ONNX file it was compiled from")
    m.primary = "onnx-twin" if cfg.twin == "onnx" or m.twin is None else "twin"
    if cfg.surrogate:
        m.surrogate, m.surrogate_info = load_surrogate(cfg.surrogate, cfg.input_range)
    return m


def load_surrogate(path: str, input_range: str = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """A float ONNX model (its graph twin) or a robustq checkpoint (its twin)."""
    from ..checkpoint import read_checkpoint

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"--surrogate {p}: no such file")
    info = {"path": str(p), "sha256": sha256_file(p)}
    if p.suffix == ".onnx":
        return graph_twin(p, input_range), {**info, "kind": "onnx"}
    model, run_cfg = read_checkpoint(p)
    return model.eval(), {**info, "kind": "checkpoint", "arch": run_cfg.model.arch, "method": run_cfg.train.method}


def check_runs(model: nn.Module, x: torch.Tensor, what: str, data_name: str) -> None:
    """One forward pass on ``x[:1]``; a shape mismatch becomes a one-line InputError."""
    try:
        with torch.no_grad():
            model(x[:1])
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{what} cannot run on {data_name} images ({first})") from None


__all__ = ["Models", "TWIN_NAMES", "check_runs", "load_models", "load_surrogate"]
