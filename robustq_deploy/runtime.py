"""Run a deployed artifact with one call: ``robustq_deploy.load(PATH)``.

``load`` returns a :class:`Runner` for an ONNX file (onnxruntime) or a compiled library. A
compiled artifact records its whole target description; the backend of the description's kind
(:mod:`robustq_deploy.compile.backend`) makes its runner: for ``cpu`` targets an x86 library runs
in this process on the TVM runtime (:class:`TVMRunner`), an aarch64 library under qemu-user
through the target's C++ runner and the aarch64 TVM runtime (:class:`EmulatedRunner`, toolchain
in :mod:`robustq_deploy.targets.toolchain`); the ``accel`` backend runs the accelerator's
simulation (:mod:`robustq_deploy.accel.runner`). A runner exposes its input and
output names, shapes and dtypes; ``runner(x)`` runs a single-input single-output model,
``runner(**inputs)`` returns a dict of outputs. Inputs are checked for dtype and shape before
they reach the runtime; non-finite float inputs are refused (no engine quantizes NaN the same
way), while finite values outside the input grid saturate identically on every engine.
Sub-byte tensors (int4/uint4) are passed to and from compiled modules in their byte storage
form (:mod:`robustq_deploy.dtypes`); callers see the signature's dtypes.

Threads: ``load(..., threads=N)`` reaches every engine: onnxruntime's intra-op pool, TVM's
thread pool (:func:`tvm_threads`; by default as many workers as physical cores) and the
emulated runner's TVM runtime. More threads than TVM's pool was started with are refused.

Compiled libraries execute native code, so they are loaded only after their manifest entry's
sha256 matches (a library no manifest lists, or a modified one, is refused), and only from a
private copy made while hashing (:func:`load_tvm_module`): replacing the file after the check
changes nothing.
To run a new kind of target, its backend's ``runner`` returns a :class:`Runner` subclass.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .dtypes import DTYPES, from_storage, numpy_dtype, to_storage
from .errors import ArtifactError, ConfigError, InputError
from .manifest import Artifact, private_copy, private_folder, read_verified, resolve_input, verify_artifact


class Runner:
    """Base runner: signature and input checks; subclasses implement :meth:`_run`."""

    engine = "base"
    execution: str | None = None  # how the code runs elsewhere ("emulated (qemu user mode)"); None: here
    threads: int | None = None  # the threads it runs with (None: the engine's default)

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
            if a.dtype != numpy_dtype(spec["dtype"]):
                raise InputError(f"input {spec['name']!r}: dtype {a.dtype} but the model expects {spec['dtype']}")
            want = spec["shape"]
            if a.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, a.shape)):
                shown = ["N" if w is None else w for w in want]
                raise InputError(f"input {spec['name']!r}: shape {list(a.shape)} but the model expects {shown}")
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                bad = int(a.size - np.count_nonzero(np.isfinite(a)))
                raise InputError(f"input {spec['name']!r}: {bad} non-finite value(s) (NaN or infinity); "
                                 "a quantized model has no level for them")
            out[spec["name"]] = np.require(a, requirements="C")
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


def _uses_external_data(data: bytes) -> bool:
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        m = onnx.load_model_from_string(data)
    except Exception:  # not parseable: onnxruntime reports it in its own words
        return False
    return any(uses_external_data(t) for t in m.graph.initializer)


_ORT_NAMES = {d.ort: name for name, d in DTYPES.items()}  # "tensor(float)" -> "float32"


class OnnxRuntimeRunner(Runner):
    engine = "onnxruntime"

    def __init__(self, path: Path, artifact: Artifact | None = None, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        self.threads = threads
        if threads:
            opts.intra_op_num_threads = threads
        # the session is built from the bytes that were hashed (a model with external data, whose
        # tensors live in other files, is opened by path)
        source = read_verified(path, artifact.sha256) if artifact is not None else str(path)
        if isinstance(source, bytes) and _uses_external_data(source):
            source = str(path)
        try:
            self.session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({first})") from None

        def desc(v):
            dt = _ORT_NAMES.get(v.type, v.type)
            return {"name": v.name, "shape": [d if isinstance(d, int) else None for d in v.shape], "dtype": dt}
        super().__init__([desc(v) for v in self.session.get_inputs()], [desc(v) for v in self.session.get_outputs()], artifact)

    def _run(self, feeds):
        outs = self.session.run(None, feeds)
        return dict(zip(self.output_names, outs))


class _CompiledRunner(Runner):
    """Shared part of the compiled-library runners: storage conversion at the boundary."""

    def _storage_inputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.require(to_storage(feeds[n]), requirements="C") for n in self.input_names]

    def _outputs(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        if len(arrays) != len(self.outputs):
            raise ArtifactError(f"{self.artifact.file}: the module returned {len(arrays)} outputs, expected {len(self.outputs)}")
        return {o["name"]: from_storage(a, o["dtype"]) for o, a in zip(self.outputs, arrays)}


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


# TVM starts its thread pool (per calling thread) with TVM_NUM_THREADS workers, or half the
# logical CPUs on x86 (it assumes hyper-threading): one worker on a 2-vCPU machine. Runners ask
# for physical cores by default, so the pool is started with that many unless the user set it.
os.environ.setdefault("TVM_NUM_THREADS", str(physical_cores()))


def tvm_threads(threads: int | None = None) -> int:
    """Set the number of workers of TVM's thread pool (of the calling thread) to ``threads``
    (None: the physical cores); returns it. More than the pool was started with is refused."""
    import tvm_ffi

    want = threads or physical_cores()
    config = tvm_ffi.get_global_func("runtime.config_threadpool")
    count = tvm_ffi.get_global_func("runtime.NumThreads")
    if count() != want:
        config(1, want)  # 1: TVM's default affinity mode (big cores)
        if count() != want:
            raise ConfigError(f"threads = {want}: TVM's thread pool in this process has at most {count()} workers "
                              "(set TVM_NUM_THREADS before the first TVM call to change that)")
    return want


def load_tvm_module(art: Artifact, path: Path, sha256: str):
    """Load the TVM library ``path`` (listed by ``art`` with ``sha256``) from a private copy made
    while hashing it: the bytes that run are the bytes that were checked, even if ``path`` is
    replaced meanwhile. The copy is removed once the library is mapped."""
    import tvm

    folder = private_folder()
    try:
        copy = private_copy(path, sha256, folder)
        try:
            return tvm.runtime.load_module(str(copy))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{path}: TVM cannot load it ({first})") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def relax_vm(lib, path: Path, device=None):
    """The Relax VM of a loaded library; a library that is not a Relax executable is a one-line error."""
    import tvm
    from tvm import relax

    try:
        vm = relax.VirtualMachine(lib, device if device is not None else tvm.cpu())
        vm["main"]
    except Exception as exc:  # AttributeError / TVMError for a shared library that is not a Relax executable
        raise ArtifactError(f"{path}: not a TVM Relax executable ({type(exc).__name__})") from None
    return vm


class TVMRunner(_CompiledRunner):
    """A Relax VM executable exported as a shared library for this machine."""

    engine = "tvm"

    def __init__(self, artifact: Artifact, desc, threads: int | None = None):
        import tvm

        lib = load_tvm_module(artifact, artifact.file, artifact.sha256)
        self.vm = relax_vm(lib, artifact.file)
        self._tensor = tvm.runtime.tensor
        self.threads = tvm_threads(threads)
        self.engine = f"tvm-{desc.name}"
        super().__init__(artifact.meta["inputs"], artifact.meta["outputs"], artifact)

    def _run(self, feeds):
        tvm_threads(self.threads)  # the pool is per calling thread, and other runners may have set it
        res = self.vm["main"](*[self._tensor(a) for a in self._storage_inputs(feeds)])
        res = [res] if hasattr(res, "numpy") else list(res)
        return self._outputs([r.numpy() for r in res])


class EmulatedRunner(_CompiledRunner):
    """A library for another architecture, run by the target's C++ runner under its emulator.

    The library is copied into a private folder while its hash is checked, and every call runs
    that copy. Each call writes the inputs as .npy files, runs the runner once (one process per
    call, so pass whole batches) and reads the outputs back.
    """

    def __init__(self, artifact: Artifact, desc, threads: int | None = None):
        from .targets.toolchain import ensure_toolchain

        self.desc = desc
        self.threads = threads or physical_cores()
        self.execution = f"emulated ({desc.emulator[0].partition('-')[0]} user mode)"
        self.toolchain = ensure_toolchain(self.desc)
        self._folder = private_folder()
        weakref.finalize(self, shutil.rmtree, self._folder, True)
        self.library = private_copy(artifact.file, artifact.sha256, self._folder)
        self.engine = f"tvm-{self.desc.name}"
        super().__init__(artifact.meta["inputs"], artifact.meta["outputs"], artifact)

    def _run(self, feeds):
        with tempfile.TemporaryDirectory(prefix="robustq-run-") as tmp:
            paths = []
            for i, a in enumerate(self._storage_inputs(feeds)):
                paths.append(Path(tmp) / f"in_{i}.npy")
                np.save(paths[-1], a)
            done = subprocess.run([*self.toolchain.command, str(self.library), tmp, *map(str, paths)],
                                  capture_output=True, text=True,
                                  env={**os.environ, "TVM_NUM_THREADS": str(self.threads)})
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                raise ArtifactError(f"{self.artifact.file}: the {self.desc.name} runner failed ({last})")
            return self._outputs([np.load(Path(tmp) / f"out_{i}.npy") for i in range(len(self.outputs))])


def _select(directory: Path, target: str | None) -> Artifact:
    """The artifact of ``directory``'s manifest to run: the compiled one for ``target``
    (``onnx``: the ONNX model), or the only compiled one."""
    from .manifest import MANIFEST_NAME, Manifest

    arts = Manifest.load(directory).artifacts
    if not arts:
        raise ArtifactError(f"{directory}: no {MANIFEST_NAME} with artifacts")
    if target in ("onnx", "onnxruntime"):
        found = [a for a in arts if a.kind == "onnx"]
    else:
        from .targets import split_target_name

        name = None if target is None else split_target_name(target)[0]
        found = [a for a in arts if a.kind == "compiled" and name in (None, a.meta.get("target"))]
    if len(found) != 1:
        have = sorted({a.meta.get("target", "?") for a in arts if a.kind == "compiled"})
        what = f"for target {target!r}" if target else "(several compiled artifacts; pass a target)"
        raise ArtifactError(f"{directory}: no single artifact {what}; compiled targets: {', '.join(have) or 'none'}")
    return verify_artifact(found[-1])


def load(path: str | Path, threads: int | None = None, target: str | None = None) -> Runner:
    """A runner for an ``.onnx`` file, a compiled artifact recorded in a manifest, or an artifact
    directory (``target`` picks its compiled artifact). For a file, ``target`` must match the
    target it was built for. ``threads``: the engine's threads (None: its default)."""
    from .compile.backend import backend_for
    from .targets import TargetDesc, split_target_name

    p = Path(path)
    art = _select(p, target) if p.is_dir() else None
    if (art.kind == "onnx") if art is not None else (p.suffix == ".onnx"):
        if target not in (None, "onnx", "onnxruntime"):
            raise ArtifactError(f"{p}: an ONNX model runs on onnxruntime; compile it for {target!r} first")
        art = art or resolve_input(p, kind="onnx", require_manifest=False)
        return OnnxRuntimeRunner(art.file, art, threads)
    art = art or resolve_input(p, kind="compiled")
    built_for = art.meta.get("target")
    if target is not None and split_target_name(target)[0] != built_for:
        raise ArtifactError(f"{p}: built for target {built_for!r}, not {target!r}")
    if "target_desc" not in art.meta:
        raise ArtifactError(f"{p}: its manifest entry has no target description (built by an older version); "
                            "compile the model again")
    try:
        desc = TargetDesc.from_meta(art.meta["target_desc"])
        backend = backend_for(desc)
    except ConfigError as exc:
        raise ArtifactError(f"{p}: {exc}") from None
    return backend.runner(art, desc, threads)
