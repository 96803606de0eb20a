"""The models a verification scores: deployed modules as black boxes, the twin, the float model.

A :class:`DeployedClassifier` wraps any runner from :func:`robustq_deploy.load` (onnxruntime, TVM
x86, aarch64 under qemu, the FPGA-like simulation, a remote TVM RPC device) and maps float inputs
in [0, 1] to logits as a torch tensor, with no gradients. Inputs are put on the deployed input
grid first: uint8 pixels, fed as uint8 when the module's input is uint8 and as the float value of
the pixel otherwise (the module's own input quantizer then sees exactly those pixels).

:func:`deployed_engines` finds the deployed forms of one model: the ONNX file in the artifact's
lineage and every compiled library built from it in the same folder. Engine selectors:
``onnxruntime``; ``tvm`` (the given compiled artifact, or every library built from the given
ONNX file); a target name (``x86``, ``aarch64``, ``fpga-sim``: the library built for it); ``all``.
New targets plug in through :func:`robustq_deploy.load` with no change here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError, UnsupportedError
from ..manifest import Artifact, Manifest, find_ancestor, resolve_input
from ..quant import FLOAT_BITS
from ..quant.modules import ActQuantizer, WeightQuantizer
from ..runtime import Runner, load

PIXEL_LEVELS = 255


def grid_pixels(x: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] as the uint8 pixels a deployed module sees (float64 array)."""
    return np.clip(np.rint(x.detach().cpu().numpy().astype(np.float64) * PIXEL_LEVELS), 0, PIXEL_LEVELS)


class DeployedClassifier:
    """A runner as a classifier of float images in [0, 1] (torch in, torch logits out)."""

    def __init__(self, runner: Runner, name: str, batch_size: int = 256):
        if len(runner.inputs) != 1 or len(runner.outputs) != 1:
            raise UnsupportedError(f"{name}: verify needs one input and one output, the module has "
                                   f"{runner.input_names} -> {runner.output_names}")
        dtype = runner.inputs[0]["dtype"]
        if dtype not in ("float32", "uint8"):
            raise UnsupportedError(f"{name}: input dtype {dtype} is not an image input (float32 or uint8)")
        self.runner = runner
        self.name = name
        self.batch_size = batch_size
        self.uint8_input = dtype == "uint8"

    def _feed(self, x: torch.Tensor) -> np.ndarray:
        pixels = grid_pixels(x)
        return pixels.astype(np.uint8) if self.uint8_input else (pixels / PIXEL_LEVELS).astype(np.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xs = self._feed(x)
        outs = [np.asarray(self.runner(xs[i:i + self.batch_size]), dtype=np.float32)
                for i in range(0, len(xs), self.batch_size)]
        if not outs:
            return torch.zeros((0, 0))
        return torch.from_numpy(np.concatenate(outs))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(1)


def float_view(model: nn.Module) -> nn.Module:
    """A copy of the twin with every quantizer switched off: the float model with the same weights."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, (ActQuantizer, WeightQuantizer)):
            m.bits = FLOAT_BITS
    return out.eval()


@dataclass
class EngineSet:
    engines: list[DeployedClassifier]
    missing: dict[str, str]  # selector -> why no engine was found for it
    artifacts: dict[str, Artifact]  # engine name -> the artifact it runs


def resolve_deployed(path: str | Path) -> Artifact:
    p = Path(path)
    return resolve_input(p, kind="onnx" if p.suffix == ".onnx" else "compiled")


def _compiled_from(onnx_art: Artifact, root: Path) -> list[Artifact]:
    """Compiled libraries recorded in ``root``'s manifest whose parent is ``onnx_art``."""
    return [a for a in Manifest.load(root).artifacts
            if a.kind == "compiled" and any(p["sha256"] == onnx_art.sha256 for p in a.parents)]


def deployed_engines(artifact: Artifact, selectors: tuple[str, ...], batch_size: int = 256,
                     threads: int | None = None, device: str | None = None) -> EngineSet:
    """Classifiers for the selected engines (see the module docstring). ``device`` (HOST:PORT)
    runs compiled libraries on a remote TVM RPC server instead of this machine."""
    onnx_art = artifact if artifact.kind == "onnx" else find_ancestor(artifact, "onnx")
    compiled = _compiled_from(onnx_art, artifact.root) if onnx_art is not None else []
    if artifact.kind == "compiled" and all(a.path != artifact.path for a in compiled):
        compiled.append(artifact)
    chosen: list[Artifact] = []
    missing: dict[str, str] = {}
    for sel in selectors:
        if sel in ("onnxruntime", "all"):
            if onnx_art is None:
                missing[sel] = "no ONNX file in the artifact's lineage"
            else:
                chosen.append(onnx_art)
        if sel in ("tvm", "all"):
            picked = [artifact] if artifact.kind == "compiled" and sel == "tvm" else compiled
            if not picked:
                missing[sel] = "no compiled library built from this ONNX file in its folder"
            chosen += picked
        if sel not in ("onnxruntime", "tvm", "all"):
            picked = [a for a in compiled if a.meta.get("target") == sel]
            if not picked:
                missing[sel] = f"no library compiled for target {sel!r} next to {artifact.file.name}"
            chosen += picked
    engines, arts = [], {}
    for art in _unique(chosen):
        runner = _runner(art, threads, device)
        name = runner.engine if runner.engine not in arts else f"{runner.engine}:{art.path}"
        arts[name] = art
        engines.append(DeployedClassifier(runner, name, batch_size))
    if not engines:
        raise ArtifactError(f"{artifact.file}: no deployed engine to verify ({'; '.join(f'{k}: {v}' for k, v in missing.items())})")
    return EngineSet(engines, missing, arts)


def _unique(arts: list[Artifact]) -> list[Artifact]:
    seen, out = set(), []
    for a in arts:
        key = (str(a.root), a.path)
        if key not in seen:
            seen.add(key)
            out.append(a)
    return out


def _runner(art: Artifact, threads: int | None, device: str | None) -> Runner:
    if art.kind == "onnx":
        return load(art.file, threads=threads)
    if device is not None:
        from .rpc import RPCRunner

        return RPCRunner(art, device)
    return load(art.file)
