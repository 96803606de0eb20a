"""The models a verification scores: deployed modules as black boxes, the twin, the float model.

A :class:`DeployedClassifier` wraps any runner from :func:`robustq_deploy.load` (onnxruntime, TVM
x86, aarch64 under qemu, the FPGA-like simulation, a remote TVM RPC device) and maps float inputs
in [0, 1] to logits as a torch tensor, with no gradients. Inputs are put on the deployed input
grid first: uint8 pixels, in the layout and scale of the model's input
(:class:`robustq_deploy.twin.InputSpec`: uint8, or the float value of the pixel in [0, 1] or
[0, 255]; the module's own input quantizer then sees exactly those pixels). An engine whose output
is a label per image (an ``ArgMax`` at the end) is *label-only*: it returns one-hot scores, and
only decision-based query attacks run against it.

:func:`resolve_deployed` accepts an ONNX file (recorded in a manifest or not: an external model is
taken with its current hash), a compiled library recorded in a manifest (native code is loaded
only after its hash matches), or an artifact folder (its ONNX model). :func:`source_onnx` finds
the ONNX graph a compiled library was built from, in its lineage or, for an external ONNX file,
where the compile stage recorded it (same hash).

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
from ..manifest import MANIFEST_NAME, Artifact, Manifest, find_ancestor, resolve_input, sha256_file, verify_artifact
from ..quant import FLOAT_BITS
from ..quant.modules import ActQuantizer, WeightQuantizer
from ..runtime import Runner, load
from ..twin.inputs import InputSpec

PIXEL_LEVELS = 255


class DeployedClassifier:
    """A runner as a classifier of float images in [0, 1] (torch in, torch logits out)."""

    def __init__(self, runner: Runner, name: str, batch_size: int = 256, spec: InputSpec | None = None,
                 num_classes: int = 10, art: Artifact | None = None):
        if len(runner.inputs) != 1 or len(runner.outputs) != 1:
            raise UnsupportedError(f"{name}: verify needs one input and one output, the module has "
                                   f"{runner.input_names} -> {runner.output_names}")
        dtype = runner.inputs[0]["dtype"]
        if dtype not in ("float32", "uint8"):
            raise UnsupportedError(f"{name}: input dtype {dtype} is not an image input (float32 or uint8)")
        self.runner = runner
        self.name = name
        self.batch_size = batch_size
        self.spec = spec if spec is not None else _spec_of(runner)
        out = runner.outputs[0]
        self.label_only = out["dtype"] in ("int64", "int32") and len(out["shape"]) <= 2 and (
            len(out["shape"]) == 1 or out["shape"][1] == 1)
        self.num_classes = num_classes
        self.emulated = runner.execution  # None: runs in this process

    def _feed(self, x: torch.Tensor) -> np.ndarray:
        return self.spec.feed(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xs = self._feed(x)
        outs = [np.asarray(self.runner(xs[i:i + self.batch_size])) for i in range(0, len(xs), self.batch_size)]
        if not outs:
            return torch.zeros((0, 0))
        out = np.concatenate(outs)
        if self.label_only:  # one-hot scores: the argmax is the label, nothing else is known
            labels = torch.from_numpy(out.reshape(-1).astype(np.int64))
            return torch.nn.functional.one_hot(labels, max(self.num_classes, int(labels.max()) + 1)).float()
        return torch.from_numpy(out.astype(np.float32).reshape(len(out), -1))

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


def _spec_of(runner: Runner) -> InputSpec:
    """An input spec from a runner's signature alone (NCHW, pixels in [0, 1] for a float input)."""
    inp = runner.inputs[0]
    dims = tuple(inp["shape"][1:])
    return InputSpec(inp["name"], inp["dtype"], {3: "NCHW", 2: "NHW", 1: "NF"}.get(len(dims), "NCHW"), dims)


def resolve_deployed(path: str | Path) -> Artifact:
    """The artifact to verify (see the module docstring). A folder stands for its ONNX model; a
    folder of libraries compiled from one external ONNX file stands for that file."""
    p = Path(path)
    if p.is_dir():
        arts = Manifest.load(p).artifacts
        onnx = [a for a in arts if a.kind == "onnx"]
        compiled = [a for a in arts if a.kind == "compiled"]
        if len(onnx) == 1:
            return verify_artifact(onnx[0])
        if not onnx and len(compiled) == 1:
            return verify_artifact(compiled[0])
        if not onnx and compiled:
            sources = {a.sha256: a for a in (source_onnx(verify_artifact(c)) for c in compiled) if a is not None}
            if len(sources) == 1:
                return next(iter(sources.values()))
        what = ("no ONNX model or compiled library" if not onnx and not compiled else
                f"several {'ONNX models' if onnx else 'compiled libraries'} "
                f"({', '.join(a.path for a in (onnx or compiled))}); pass one of them")
        raise ArtifactError(f"{p}: {what} in {MANIFEST_NAME}")
    if p.suffix == ".onnx":
        return resolve_input(p, kind="onnx", require_manifest=False)
    return resolve_input(p, kind="compiled")


def source_onnx(art: Artifact) -> Artifact | None:
    """The ONNX model ``art`` is or was compiled from (hash-checked), or None."""
    if art.kind == "onnx":
        return art
    found = find_ancestor(art, "onnx")
    if found is not None:
        return found
    src = (art.meta or {}).get("source")
    if src:
        p = Path(src["path"])
        if not p.is_absolute():
            p = art.root / p
        if p.is_file() and sha256_file(p) == src["sha256"]:
            return Artifact(name=p.name, kind="onnx", path=p.name, sha256=src["sha256"], stage="external", root=p.parent)
    return None


def _compiled_from(onnx_art: Artifact, root: Path) -> list[Artifact]:
    """Compiled libraries recorded in ``root``'s manifest built from ``onnx_art``."""
    return [a for a in Manifest.load(root).artifacts
            if a.kind == "compiled" and (any(p["sha256"] == onnx_art.sha256 for p in a.parents)
                                         or (a.meta or {}).get("source", {}).get("sha256") == onnx_art.sha256)]


def deployed_engines(artifact: Artifact, selectors: tuple[str, ...], batch_size: int = 256,
                     threads: int | None = None, device: str | None = None, spec: InputSpec | None = None,
                     num_classes: int = 10, folder: Path | None = None) -> EngineSet:
    """Classifiers for the selected engines (see the module docstring). ``device`` (HOST:PORT)
    runs compiled libraries on a remote TVM RPC server instead of this machine. Libraries are
    looked up in ``folder`` (default: the artifact's own folder)."""
    onnx_art = source_onnx(artifact)
    compiled = _compiled_from(onnx_art, folder or artifact.root) if onnx_art is not None else []
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
        engines.append(DeployedClassifier(runner, name, batch_size, spec, num_classes, art))
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
