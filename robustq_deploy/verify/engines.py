"""The deployed model as a black-box classifier, and the twin as a white-box one.

A :class:`DeployedClassifier` wraps a runner (onnxruntime, TVM) and returns logits as a torch
tensor for float inputs in [0, 1]; it has no gradients. :func:`deployed_engines` collects every
deployed form in an artifact's lineage (the compiled library itself, the ONNX file it came from).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..manifest import Artifact, find_ancestor, resolve_input
from ..runtime import Runner, load


class DeployedClassifier:
    def __init__(self, runner: Runner, name: str, batch_size: int = 256):
        self.runner = runner
        self.name = name
        self.batch_size = batch_size
        self.queries = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        xs = x.detach().cpu().numpy().astype(np.float32)
        for i in range(0, len(xs), self.batch_size):
            outs.append(np.asarray(self.runner(xs[i:i + self.batch_size]), dtype=np.float32))
        self.queries += len(xs)
        return torch.from_numpy(np.concatenate(outs) if outs else np.zeros((0, 0), np.float32))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(1)


def deployed_engines(artifact: Artifact, engines: tuple[str, ...], batch_size: int) -> list[DeployedClassifier]:
    """Classifiers for the requested engines found in the artifact and its ancestors."""
    found: list[DeployedClassifier] = []
    onnx_art = artifact if artifact.kind == "onnx" else find_ancestor(artifact, "onnx")
    if "onnxruntime" in engines and onnx_art is not None:
        found.append(DeployedClassifier(load(onnx_art.file), "onnxruntime", batch_size))
    if "tvm" in engines and artifact.kind == "compiled":
        runner = load(artifact.file)
        found.append(DeployedClassifier(runner, runner.engine, batch_size))
    return found


def resolve_deployed(path: str | Path) -> Artifact:
    p = Path(path)
    return resolve_input(p, kind="onnx" if p.suffix == ".onnx" else "compiled")
