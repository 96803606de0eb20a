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

Per-call cost: what can be derived once is derived at load (the signature's checks, the VM's
``main``, TVM's thread-pool functions); a call checks its input against them, hands it to TVM
through a kept aligned staging buffer (:class:`TensorStaging`), and returns a fresh numpy array.
``bench/overhead.py`` measures the cost against the raw Relax VM call and onnxruntime.

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

import functools
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .dtypes import DTYPES, from_storage, numpy_dtype, to_storage
from .errors import ArtifactError, ConfigError, InputError
from .manifest import Artifact, private_copy, private_folder, read_verified, resolve_input, verify_artifact


_VDOT = np.vdot  # the sum of squares: the cheapest whole-array reduction numpy has for small arrays


class _InputCheck:
    """One input of a runner's signature, prepared once at load: the checks every call's array
    gets (name, dtype, shape with free dimensions, finiteness of float values), with the messages
    of a one-line error."""

    __slots__ = ("name", "dtype", "shape", "ndim", "exact", "tail", "finite", "expects")

    def __init__(self, spec: dict):
        self.name = spec["name"]
        self.dtype = numpy_dtype(spec["dtype"])
        self.expects = spec["dtype"]
        self.shape = tuple(spec["shape"])
        self.ndim = len(self.shape)
        # the usual signatures, compared as one tuple: every dimension fixed, or all but the batch
        self.exact = self.shape if None not in self.shape else None
        self.tail = self.shape[1:] if self.ndim and self.shape[0] is None and None not in self.shape[1:] else None
        self.finite = self.dtype.kind == "f"

    def __call__(self, value: Any) -> np.ndarray:
        """``value`` as a C-contiguous array of the signature's dtype and shape, or InputError."""
        a = value if type(value) is np.ndarray else np.asarray(value)
        if a.dtype != self.dtype:
            raise InputError(f"input {self.name!r}: dtype {a.dtype} but the model expects {self.expects}")
        shape = a.shape
        if shape != self.exact:
            if self.tail is not None:
                fits = len(shape) == self.ndim and shape[1:] == self.tail
            else:
                fits = self.exact is None and len(shape) == self.ndim and all(
                    w is None or w == g for w, g in zip(self.shape, shape))
            if not fits:
                shown = ["N" if w is None else w for w in self.shape]
                raise InputError(f"input {self.name!r}: shape {list(shape)} but the model expects {shown}")
        # a finite sum of squares proves every value finite (NaN propagates, an infinity squares
        # to +inf, and no term is negative to cancel it; vdot raises no floating-point warning);
        # a sum that overflows is settled by the exact test
        if self.finite and not math.isfinite(_VDOT(a, a)) and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise InputError(f"input {self.name!r}: {bad} non-finite value(s) (NaN or infinity); "
                             "a quantized model has no level for them")
        return a if a.flags.c_contiguous else np.ascontiguousarray(a)


class Runner:
    """Base runner: signature and input checks; subclasses implement :meth:`_run` (and may
    implement :meth:`_run_one`, the single-input single-output call, for less overhead).

    The checks are prepared once from the signature at load; :meth:`_prepare` is where a
    subclass sets up its own per-call state once the signature is known."""

    engine = "base"
    execution: str | None = None  # how the code runs elsewhere ("emulated (qemu user mode)"); None: here
    threads: int | None = None  # the threads it runs with (None: the engine's default)

    def __init__(self, inputs: list[dict], outputs: list[dict], artifact: Artifact | None = None):
        self.inputs = inputs
        self.outputs = outputs
        self.artifact = artifact
        self._checks = [_InputCheck(spec) for spec in inputs]
        self._one = self._checks[0] if len(inputs) == 1 else None  # runner(x) takes this input
        self._one_out = len(outputs) == 1  # runner(x) returns the array, not a dict
        self._prepare()

    def _prepare(self) -> None:
        """Per-call state of the engine (called at the end of :meth:`__init__`)."""

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.outputs]

    def _check(self, feeds: dict[str, Any]) -> dict[str, np.ndarray]:
        if len(feeds) != len(self._checks) or any(c.name not in feeds for c in self._checks):
            raise InputError(f"inputs {sorted(feeds)} do not match the model's {self.input_names}")
        return {c.name: c(feeds[c.name]) for c in self._checks}

    def __call__(self, *args: np.ndarray, **inputs: np.ndarray):
        if args:
            if len(args) != 1 or inputs or self._one is None:
                raise InputError(f"this model takes named inputs {self.input_names}")
            a = self._one(args[0])
            if self._one_out:
                return self._run_one(a)
            return self._run({self._one.name: a})
        return self._run(self._check(inputs))

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _run_one(self, a: np.ndarray) -> np.ndarray:
        """The output of a single-input single-output model on checked input ``a``."""
        return self._run({self._one.name: a})[self.outputs[0]["name"]]


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

    def _run_one(self, a):
        return self.session.run(None, {self._one.name: a})[0]


def _sub_byte(name: str) -> bool:
    d = DTYPES.get(name)
    return d is not None and d.sub_byte


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
# After a parallel job TVM's workers spin before they sleep: 300,000 polls by default, measured at
# ~150 ms of a busy core after every call (MobileNetV2, 2 cores), stolen from whatever the
# application runs next. The kernels of one call follow each other within microseconds, so a
# short spin keeps them as fast (same latency at batch 1 and 64) and the workers park within ~5 ms.
SPIN_COUNT = 10_000
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(SPIN_COUNT))


def wait_idle(max_s: float = 2.0, step_s: float = 0.005, busy_s: float = 0.0005) -> float:
    """Sleep until this process's threads have stopped using the CPU (the worker threads of
    onnxruntime and TVM poll for a while after a call) or ``max_s`` has passed; returns the
    seconds waited. For timing engines one after the other: a fixed pause shorter than the
    other engine's polling lets that engine's spinning threads slow the call being timed
    (measured: onnxruntime 3x slower right after a TVM call at TVM's default spin count)."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_s:
        cpu = time.process_time()
        time.sleep(step_s)
        if time.process_time() - cpu < busy_s:
            break
    return time.perf_counter() - start


_POOL: list = []  # TVM's "runtime.config_threadpool" and "runtime.NumThreads", looked up once


def _pool_functions():
    if not _POOL:
        import tvm_ffi

        _POOL.extend((tvm_ffi.get_global_func("runtime.config_threadpool"),
                      tvm_ffi.get_global_func("runtime.NumThreads")))
    return _POOL


def tvm_threads(threads: int | None = None) -> int:
    """Set the number of workers of TVM's thread pool (of the calling thread) to ``threads``
    (None: the physical cores); returns it. More than the pool was started with is refused."""
    want = threads or physical_cores()
    config, count = _pool_functions()
    if count() != want:
        config(1, want)  # 1: TVM's default affinity mode (big cores)
        if count() != want:
            raise ConfigError(f"threads = {want}: TVM's thread pool in this process has at most {count()} workers "
                              "(set TVM_NUM_THREADS before the first TVM call to change that)")
    return want


def tvm_worker_cores() -> set[int]:
    """The cores TVM pins the workers of a calling thread's pool to (its default "big cores"
    mode, the calling thread running task 0): cores ordered by maximum frequency, highest first
    and then by number, as TVM orders them; the first is left to the calling thread and the next
    ``pool size - 1`` get one worker each. Empty when TVM does not bind (``TVM_BIND_THREADS``
    other than 1, or a pool larger than the cores)."""
    bind = os.environ.get("TVM_BIND_THREADS")
    if bind is not None and bind.strip() != "1":
        return set()
    n = os.cpu_count() or 1
    size = os.environ.get("TVM_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    try:
        size = int(size) if size else max(n // 2, 1)
    except ValueError:
        return set()
    if size > n:  # TVM pins nothing when its pool outnumbers the cores
        return set()

    def max_freq(i: int) -> int:
        try:
            return int(Path(f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_max_freq").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    order = sorted(range(n), key=lambda i: (-max_freq(i), i))
    return set(order[1:size])


@functools.lru_cache(maxsize=1)
def _sched_getcpu():
    """The C library's ``sched_getcpu`` (the core the calling thread runs on), or None."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (AttributeError, OSError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_int, []
    return fn


def off_worker_cores(workers: frozenset[int]):
    """Move the calling thread off the cores of TVM's pinned workers for one call; returns the
    thread's cores to restore afterwards, or None when nothing was changed.

    TVM pins each worker of a calling thread's pool to a core and lets the calling thread (which
    runs task 0) roam over all of them. A caller that starts a call on a worker's core shares
    that core with the worker for the whole call while another core idles (measured: ResNet-18
    32x32 at batch 1 on 2 cores, 3.4-3.6 ms instead of 2.1 ms, in about half of the processes).
    The thread is moved only when it is on a worker's core (one ``sched_getcpu`` otherwise), and
    only for the call: threads it starts later do not inherit a narrowed set of cores."""
    if not workers:
        return None
    getcpu = _sched_getcpu()
    if getcpu is None or getcpu() not in workers:
        return None
    try:
        cores = os.sched_getaffinity(0)
        keep = cores - workers
        if not keep:
            return None
        os.sched_setaffinity(0, keep)
        return cores
    except OSError:
        return None


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


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised numpy array whose data is 64-byte aligned (TVM's DLPack import requires it)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + nbytes].view(dtype).reshape(shape)


# Inputs up to this size are copied into a staging buffer kept per input shape (with its TVM view);
# larger ones go to TVM zero-copy when 64-byte aligned, else through a one-off aligned copy.
STAGING_BYTES = 1 << 20


class TensorStaging:
    """Numpy arrays of one input to TVM tensors on the CPU, cheaply, call after call.

    ``tvm.runtime.tensor(array)`` allocates and copies (tens of microseconds, more than a small
    model's inference); TVM's DLPack import is zero-copy but wants 64-byte aligned data, which
    numpy does not promise. So an array of at most :data:`STAGING_BYTES` is copied into a kept
    aligned buffer of its shape whose TVM view was made once (the last few shapes are kept);
    a larger one is passed zero-copy when aligned, contiguous and writable (DLPack cannot mark
    read-only memory), else through a one-off aligned copy. The tensor returned is valid until
    the next call: callers serialise a call and its use.
    """

    KEEP = 4  # shapes (batch sizes) kept

    def __init__(self):
        import tvm

        self.kept: dict[tuple, tuple] = {}  # shape -> (aligned array, its TVM view)
        self._from_dlpack = tvm.runtime.from_dlpack

    def __call__(self, a: np.ndarray):
        if 0 < a.nbytes <= STAGING_BYTES:
            slot = self.kept.get(a.shape)
            if slot is None or slot[0].dtype != a.dtype:
                if len(self.kept) >= self.KEEP:
                    self.kept.clear()
                buf = aligned_empty(a.shape, a.dtype)
                slot = self.kept[a.shape] = (buf, self._from_dlpack(buf))
            slot[0][...] = a  # same dtype and shape (cheaper than np.copyto's dispatch)
            return slot[1]
        if not a.size:  # no elements: nothing to align
            import tvm

            return tvm.runtime.tensor(a)
        if not (a.flags.writeable and a.flags.c_contiguous and a.ctypes.data % 64 == 0):
            buf = aligned_empty(a.shape, a.dtype)
            np.copyto(buf, a)
            a = buf
        return self._from_dlpack(a)


class TVMRunner(_CompiledRunner):
    """A Relax VM executable exported as a shared library for this machine.

    Per call, with everything that can be derived once done at load (``main`` looked up, the
    signature's checks, the thread pool's functions): the input is checked, handed to TVM by
    :class:`TensorStaging` (an aligned buffer and its TVM view kept per shape), ``main`` runs,
    and the output comes back as a fresh numpy array (one copy out of the VM's tensor, which
    may be a constant or the staged input itself). The thread pool is set again only when
    something changed it (TVM's pool belongs to the calling thread; another runner may have set
    it). Calls on one runner from several threads are serialised.
    """

    engine = "tvm"

    def __init__(self, artifact: Artifact, desc, threads: int | None = None):
        lib = load_tvm_module(artifact, artifact.file, artifact.sha256)
        self.vm = relax_vm(lib, artifact.file)
        self.threads = tvm_threads(threads)
        self.engine = f"tvm-{desc.name}"
        super().__init__(artifact.meta["inputs"], artifact.meta["outputs"], artifact)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_run" in cls.__dict__ and "_run_one" not in cls.__dict__:
            cls._run_one = Runner._run_one  # a subclass's own _run (a lock, a device) stays the one way in

    def _prepare(self) -> None:
        import tvm

        self._main = self.vm["main"]
        self._tensor_type = tvm.runtime.Tensor
        self._num_threads = _pool_functions()[1]
        self._workers = frozenset(tvm_worker_cores()) if self.threads > 1 else frozenset()
        self._lock = threading.Lock()
        self._staging = [TensorStaging() for _ in self.inputs]
        self._sub_in = [_sub_byte(i["dtype"]) for i in self.inputs]  # widened to their storage dtype first
        self._plain_out = len(self.outputs) == 1 and not _sub_byte(self.outputs[0]["dtype"])

    def _call(self, *args):
        """``main`` at this runner's thread count, off the workers' cores; call with the lock held."""
        if self._num_threads() != self.threads:
            tvm_threads(self.threads)
        moved = off_worker_cores(self._workers)
        try:
            return self._main(*args)
        finally:
            if moved is not None:
                os.sched_setaffinity(0, moved)

    def _to_tvm(self, i: int, a: np.ndarray):
        """Checked input ``i`` as a TVM tensor; call with the lock held."""
        return self._staging[i](to_storage(a) if self._sub_in[i] else a)

    def _run_one(self, a):
        with self._lock:
            res = self._call(self._staging[0](to_storage(a) if self._sub_in[0] else a))
            if self._plain_out and type(res) is self._tensor_type:
                return np.from_dlpack(res).copy()  # a fresh array: the VM's tensor is not handed out
            return self._tvm_outputs(res)[self.outputs[0]["name"]]

    def _run(self, feeds):
        with self._lock:  # until the outputs are copied: one may be the staged input itself
            res = self._call(*[self._to_tvm(i, feeds[c.name]) for i, c in enumerate(self._checks)])
            return self._tvm_outputs(res)

    def _tvm_outputs(self, res) -> dict[str, np.ndarray]:
        res = [res] if isinstance(res, self._tensor_type) else list(res)
        return self._outputs([np.from_dlpack(r).copy() for r in res])


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
