"""Run a deployed artifact with one call: ``robustq_deploy.load(PATH)``.

``load`` returns a :class:`Runner` for an ONNX file (onnxruntime) or a compiled library (TVM
runtime). A runner exposes its input and output names, shapes and dtypes; ``runner(x)`` runs a
single-input single-output model, ``runner(**inputs)`` returns a dict of outputs. Inputs are
checked for dtype and shape before they reach the runtime.

Compiled libraries execute native code, so they are loaded only after their manifest entry's
sha256 matches (a library no manifest lists, or a modified one, is refused).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, InputError
from .manifest import Artifact, resolve_input


class Runner:
    """Base runner: signature and input checks; subclasses implement :meth:`_run`."""

    engine = "base"

    def __init__(self, inputs: list[dict], outputs: list[dict], artifact: Artifact | None = None):
        self.inputs = inputs
        self.outputs = outputs
        self.artifact = artifact

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.outputs]

    def _check(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise InputError(f"inputs {sorted(feeds)} do not match the model's {self.input_names}")
        out = {}
        for spec in self.inputs:
            a = np.asarray(feeds[spec["name"]])
            if a.dtype != np.dtype(spec["dtype"]):
                raise InputError(f"input {spec['name']!r}: dtype {a.dtype} but the model expects {spec['dtype']}")
            want = spec["shape"]
            if a.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, a.shape)):
                shown = ["N" if w is None else w for w in want]
                raise InputError(f"input {spec['name']!r}: shape {list(a.shape)} but the model expects {shown}")
            out[spec["name"]] = np.ascontiguousarray(a)
        return out

    def __call__(self, *args: np.ndarray, **inputs: np.ndarray):
        if args:
            if len(args) != 1 or inputs or len(self.inputs) != 1:
                raise InputError(f"this model takes named inputs {self.input_names}")
            inputs = {self.input_names[0]: args[0]}
        outs = self._run(self._check(inputs))
        if args and len(self.outputs) == 1:
            return outs[self.output_names[0]]
        return outs

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeRunner(Runner):
    engine = "onnxruntime"

    def __init__(self, path: Path, artifact: Artifact | None = None, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({first})") from None

        def desc(v):
            dt = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
                  "tensor(int32)": "int32", "tensor(int64)": "int64"}.get(v.type, v.type)
            return {"name": v.name, "shape": [d if isinstance(d, int) else None for d in v.shape], "dtype": dt}
        super().__init__([desc(v) for v in self.session.get_inputs()], [desc(v) for v in self.session.get_outputs()], artifact)

    def _run(self, feeds):
        outs = self.session.run(None, feeds)
        return dict(zip(self.output_names, outs))


class TVMRunner(Runner):
    """A Relax VM executable exported as a shared library for the host."""

    engine = "tvm"

    def __init__(self, artifact: Artifact):
        import tvm
        from tvm import relax

        try:
            lib = tvm.runtime.load_module(str(artifact.file))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{artifact.file}: TVM cannot load it ({first})") from None
        self.vm = relax.VirtualMachine(lib, tvm.cpu())
        self._tensor = tvm.runtime.tensor
        self.engine = f"tvm-{artifact.meta.get('target', 'x86')}"
        super().__init__(artifact.meta["inputs"], artifact.meta["outputs"], artifact)

    def _run(self, feeds):
        args = [self._tensor(feeds[n]) for n in self.input_names]
        res = self.vm["main"](*args)
        if not isinstance(res, (list, tuple)) and hasattr(res, "numpy"):
            res = [res]
        return {n: r.numpy() for n, r in zip(self.output_names, res)}


def load(path: str | Path, threads: int | None = None) -> Runner:
    """A runner for an ``.onnx`` file or a compiled artifact recorded in a manifest."""
    p = Path(path)
    if p.suffix == ".onnx":
        art = resolve_input(p, kind="onnx", require_manifest=False)
        return OnnxRuntimeRunner(art.file, art, threads)
    art = resolve_input(p, kind="compiled")
    runner = art.meta.get("runner", "native")
    if runner == "native":
        return TVMRunner(art)
    raise ArtifactError(f"{p}: runner {runner!r} is not available")
