"""The per-call path of ``robustq_deploy.load(...)(x)``: the same numbers as the plain Relax VM
call on the same library (``tvm.runtime.tensor`` in, ``.numpy()`` out) for the fused network and
the per-op module, whatever the input's layout, alignment, size or batch and however the calls
interleave (staging buffers, thread pools, threads); wrong inputs still give the same one-line
errors on every engine."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import robustq_deploy.runtime as runtime
from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig, ExportConfig
from robustq_deploy.errors import InputError
from robustq_deploy.export import export_stage
from robustq_deploy.manifest import resolve_input
from robustq_deploy.runtime import TVMRunner, load, load_tvm_module, relax_vm
from robustq_deploy.targets import TargetDesc

from .compile.helpers import assert_bit_equal

KINDS = ("fused", "per-op")


@pytest.fixture(scope="module")
def libraries(zoo, tmp_path_factory):
    """One digits model (QDQ export) compiled twice for x86: the fused network and, with
    onnxruntime's float rescale, the per-op module; and its ONNX file."""
    out = tmp_path_factory.mktemp("calls")
    ckpt = resolve_input(zoo.copy("digits-cnn-qat", out / "model"), kind="checkpoint")
    onnx_art = export_stage(ckpt.file, ExportConfig(format="qdq"), out / "model")
    fused = compile_stage(onnx_art.file, CompileConfig(target="x86"), out / "fused")
    per_op = compile_stage(onnx_art.file, CompileConfig(target="x86", requant="float"), out / "per-op")
    assert fused.meta["compile_path"] == "fused-network" and per_op.meta["compile_path"] != "fused-network"
    return {"fused": fused, "per-op": per_op, "onnx": onnx_art}


def plain_vm(art):
    """The library's ``main`` called the plain way: a new TVM tensor per call, ``.numpy()`` out."""
    import tvm

    vm = relax_vm(load_tvm_module(art, art.file, art.sha256), art.file)
    return lambda x: vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x))).numpy()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def unaligned(x: np.ndarray) -> np.ndarray:
    """A copy of ``x`` whose data is not 64-byte aligned."""
    buf = np.empty(x.size + 16, x.dtype)
    start = next(i for i in range(1, 16) if (buf.ctypes.data + i * x.itemsize) % 64)
    out = buf[start:start + x.size].reshape(x.shape)
    out[...] = x
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_results_equal_the_plain_vm_call(libraries, kind):
    art = libraries[kind]
    r, want = load(art.file), plain_vm(art)
    seen = []
    for i, n in enumerate((1, 3, 64, 1, 3)):  # batch sizes come and go: staging buffers per shape
        x = images(n, i)
        kept = x.copy()
        y = r(x)
        assert_bit_equal(y, want(x))
        assert_bit_equal(x, kept)  # the input is not written
        assert y.flags.owndata and y.flags.writeable  # a fresh array, not the VM's tensor
        seen.append((y, y.copy()))
    for y, copy in seen:  # later calls leave earlier results alone
        assert_bit_equal(y, copy)
    x = images(4, 9)
    flipped = x[:, :, ::-1, :]  # not contiguous
    assert_bit_equal(r(flipped), want(flipped))
    assert_bit_equal(r(unaligned(x)), want(x))
    x.flags.writeable = False
    assert_bit_equal(r(x), want(x))
    assert_bit_equal(r(**{r.input_names[0]: x})[r.output_names[0]], want(x))  # named: a dict of outputs


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_above_the_staging_size(libraries, kind, monkeypatch):
    """Inputs past STAGING_BYTES go to TVM without a kept buffer: zero-copy when aligned and
    writable, through a one-off aligned copy otherwise."""
    from robustq_deploy.runtime import aligned_empty

    monkeypatch.setattr(runtime, "STAGING_BYTES", 0)
    art = libraries[kind]
    r, want = load(art.file), plain_vm(art)
    x = images(5, 1)
    aligned = aligned_empty(x.shape, x.dtype)
    aligned[...] = x
    readonly = aligned.copy()
    readonly.flags.writeable = False
    for arr in (aligned, unaligned(x), readonly, x[:, :, :, ::-1]):
        assert_bit_equal(r(arr), want(arr))
    assert_bit_equal(aligned, x)
    assert not any(s.kept for s in r._staging)  # nothing kept for them


@pytest.mark.parametrize("engine", [*KINDS, "onnx"])
def test_wrong_inputs_are_one_line_errors(libraries, engine):
    r = load(libraries[engine].file)
    name = r.input_names[0]
    x = images(2, 0)
    cases = [
        (x.astype(np.float64), f"input '{name}': dtype float64 but the model expects float32"),
        (x.tolist(), f"input '{name}': dtype float64 but the model expects float32"),
        (x[:, 0], f"input '{name}': shape [2, 8, 8] but the model expects ['N', 1, 8, 8]"),
        (x[:, :, :, :7], f"input '{name}': shape [2, 1, 8, 7] but the model expects ['N', 1, 8, 8]"),
        (np.zeros((2, 3, 8, 8), np.float32), f"input '{name}': shape [2, 3, 8, 8] but the model expects ['N', 1, 8, 8]"),
    ]
    bad = x.copy()
    bad[1, 0, 2, 2], bad[0, 0, 0, 0] = np.nan, -np.inf
    cases.append((bad, f"input '{name}': 2 non-finite value(s) (NaN or infinity); a quantized model has no level for them"))
    for value, message in cases:
        with pytest.raises(InputError) as err:
            r(value)
        assert str(err.value) == message
        with pytest.raises(InputError) as err:  # named inputs: the same checks
            r(**{name: value})
        assert str(err.value) == message
    with pytest.raises(InputError) as err:
        r(x_wrong=x)
    assert str(err.value) == f"inputs ['x_wrong'] do not match the model's ['{name}']"
    with pytest.raises(InputError, match="takes named inputs"):
        r(x, x)
    huge = np.full((2, 1, 8, 8), 3.4e38, np.float32)  # finite, but their sum overflows: still accepted
    assert r(huge).shape[0] == 2


@pytest.mark.parametrize("kind", KINDS)
def test_calls_from_several_threads(libraries, kind):
    art = libraries[kind]
    r, want = load(art.file), plain_vm(art)
    xs = [images(1 + i % 3, 100 + i) for i in range(8)]
    expected = [want(x) for x in xs]
    wrong = []

    def work(k):
        for j in range(40):
            i = (k + j) % len(xs)
            if not np.array_equal(r(xs[i]), expected[i]):
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_each_call_runs_at_its_runners_threads(libraries):
    """Two runners at different thread counts, called in turns on one thread: each call finds
    TVM's pool (of the calling thread) at its own count."""
    import tvm_ffi

    workers = tvm_ffi.get_global_func("runtime.NumThreads")
    art = libraries["fused"]
    most = min(2, int(os.environ["TVM_NUM_THREADS"]))
    seen = []

    def run():
        one, two = load(art.file, threads=1), load(art.file, threads=most)
        x = images(1, 0)
        for r in (one, two, one, two, one):
            r(x)
            seen.append((r.threads, workers()))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert len(seen) == 5 and all(want == got for want, got in seen), seen


def test_a_subclass_run_stays_the_way_in(libraries):
    """A runner subclass that wraps ``_run`` (the fpga-sim runner's device lock) sees every call,
    single-input calls included."""
    calls = []

    class Wrapped(TVMRunner):
        def _run(self, feeds):
            calls.append(len(feeds))
            return super()._run(feeds)

    art = libraries["fused"]
    r = Wrapped(art, TargetDesc.from_meta(art.meta["target_desc"]))
    x = images(2, 3)
    assert_bit_equal(r(x), plain_vm(art)(x))
    assert calls == [1]


SPIN_PROBE = """
import sys, time
import numpy as np
import robustq_deploy
m = robustq_deploy.load(sys.argv[1], threads=2)
x = np.random.default_rng(0).random((256, 1, 8, 8), dtype=np.float32)
worst = 0.0
for _ in range(3):
    m(x)
    c = time.process_time()
    time.sleep(0.3)
    worst = max(worst, time.process_time() - c)
print(worst)
"""


def test_workers_park_soon_after_a_call(libraries, tmp_path):
    """After a call, TVM's workers stop polling within a few milliseconds (``SPIN_COUNT``): the
    process uses little CPU while it sleeps. TVM's default spin kept a core busy for ~150 ms after
    every call on the 2-core CI machine (and an engine timed next ran up to 3x slower)."""
    import subprocess
    import sys

    if runtime.physical_cores() < 2:
        pytest.skip("one core: TVM starts no worker threads")
    env = {k: v for k, v in os.environ.items() if k != "TVM_THREAD_POOL_SPIN_COUNT"}
    script = tmp_path / "probe.py"
    script.write_text(SPIN_PROBE)
    out = subprocess.run([sys.executable, str(script), str(libraries["per-op"].file)], env=env,
                         capture_output=True, text=True, check=True)
    busy = float(out.stdout.strip().splitlines()[-1])
    assert busy < 0.06, f"{busy * 1e3:.0f} ms of CPU in a 300 ms idle window after a call"


AFFINITY_PROBE = """
import json, os, sys, threading
import numpy as np
import robustq_deploy
m = robustq_deploy.load(sys.argv[1], threads=2)
x = np.random.default_rng(0).random((256, 1, 8, 8), dtype=np.float32)
m(x)  # the pool exists from here on
me = threading.get_native_id()
workers = set()
for t in os.listdir("/proc/self/task"):
    if int(t) != me and len(os.sched_getaffinity(int(t))) == 1:
        workers |= os.sched_getaffinity(int(t))
full = os.sched_getaffinity(0)
seen = []
inner = m._main
m._main = lambda *a: (seen.append(sorted(os.sched_getaffinity(0))), inner(*a))[1]
import robustq_deploy.runtime as rt
for w in sorted(workers):  # a call that starts on a worker's core (reported as such: no race with the scheduler)
    rt._sched_getcpu = lambda w=w: (lambda: w)
    m(x)
print(json.dumps({"workers": sorted(workers), "full": sorted(full), "during": seen,
                  "after": sorted(os.sched_getaffinity(0))}))
"""


def test_a_call_starting_on_a_workers_core_moves_off_it(libraries, tmp_path):
    """TVM pins each worker of a 2-thread pool to a core and lets the calling thread (which runs
    task 0) roam over all cores; a call that starts on the worker's core shares it with the
    worker throughout (ResNet-18 32x32 at batch 1: 3.4-3.6 ms instead of 2.1). Such a call runs
    with the caller off the workers' cores, and the caller's cores are restored after it; with
    TVM_BIND_THREADS=0 (no pinned workers) nothing is moved."""
    import json
    import subprocess
    import sys

    if runtime.physical_cores() < 2 or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: TVM starts no worker threads")
    script = tmp_path / "probe.py"
    script.write_text(AFFINITY_PROBE)
    runs = {}
    for bind in ("1", "0"):
        env = {**os.environ, "TVM_BIND_THREADS": bind, "TVM_NUM_THREADS": "2"}
        out = subprocess.run([sys.executable, str(script), str(libraries["per-op"].file)], env=env,
                             capture_output=True, text=True, check=True)
        runs[bind] = json.loads(out.stdout.strip().splitlines()[-1])
    bound = runs["1"]
    assert bound["workers"] and len(bound["during"]) == len(bound["workers"]), runs
    assert all(not set(d) & set(bound["workers"]) for d in bound["during"]), runs
    assert bound["after"] == bound["full"], runs
    assert runs["0"]["workers"] == [], runs


def test_off_worker_cores_moves_only_a_thread_on_a_workers_core(monkeypatch):
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    full = os.sched_getaffinity(0)
    a, b = sorted(full)[:2]
    monkeypatch.setattr(runtime, "_sched_getcpu", lambda: (lambda: b))  # "this thread runs on core b"
    try:
        assert runtime.off_worker_cores(frozenset()) is None
        assert runtime.off_worker_cores(frozenset({a})) is None  # not on a worker's core
        assert os.sched_getaffinity(0) == full
        assert runtime.off_worker_cores(frozenset(full)) is None  # no core would be left
        old = runtime.off_worker_cores(frozenset({b}))
        assert old == full and os.sched_getaffinity(0) == full - {b}
    finally:
        os.sched_setaffinity(0, full)


def test_tvm_worker_cores_follow_tvms_binding_rules(monkeypatch):
    n = os.cpu_count() or 1
    monkeypatch.delenv("TVM_BIND_THREADS", raising=False)
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    assert runtime.tvm_worker_cores() == set()  # no worker thread
    monkeypatch.setenv("TVM_NUM_THREADS", str(n + 1))
    assert runtime.tvm_worker_cores() == set()  # more workers than cores: TVM pins none
    if n >= 2:
        monkeypatch.setenv("TVM_NUM_THREADS", "2")
        workers = runtime.tvm_worker_cores()
        assert len(workers) == 1 and workers <= set(range(n))
        monkeypatch.setenv("TVM_BIND_THREADS", "0")
        assert runtime.tvm_worker_cores() == set()
