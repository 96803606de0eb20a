"""robustq_deploy.load: ONNX files, x86 libraries, aarch64 libraries under qemu, artifact
directories; input checks; int4 tensors across the module boundary; hash-checked loading."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig
from robustq_deploy.errors import ArtifactError, InputError
from robustq_deploy.runtime import load

from .compile.helpers import assert_bit_equal, require_qemu
from .compile.test_node_cases import CASES, bound_case


def _saved(name: str, root):
    model, data, expected = bound_case(CASES[name])
    path = root / f"{name}.onnx"
    onnx.save(model, str(path))
    return path, data, expected


@pytest.fixture(scope="module")
def int4_models(tmp_path_factory):
    """QuantizeLinear to int4 (int4 output) and DequantizeLinear of int4 (int4 input), compiled."""
    root = tmp_path_factory.mktemp("rt")
    out = {}
    for name in ("test_quantizelinear_int4", "test_dequantizelinear_int4"):
        path, data, expected = _saved(name, root)
        art = compile_stage(path, CompileConfig(target="x86"), root / name)
        out[name] = (path, art, data, expected)
    return out


def test_onnx_runner_signature_and_input_checks(tmp_path):
    path, (x, w), (y,) = _saved("test_qlinearconv", tmp_path)  # data input x and weight input w
    r = load(path)
    assert r.engine == "onnxruntime" and r.input_names == ["x", "w"] and r.inputs[0]["dtype"] == "uint8"
    assert_bit_equal(r(x=x, w=w)["y"], y)
    with pytest.raises(InputError, match="takes named inputs"):
        r(x)
    with pytest.raises(InputError, match="dtype int8"):
        r(x=x.astype(np.int8), w=w)
    with pytest.raises(InputError, match="shape"):
        r(x=x.reshape(-1), w=w)
    with pytest.raises(InputError, match="do not match"):
        r(z=x, w=w)


def test_int4_tensors_cross_the_module_boundary(int4_models):
    import ml_dtypes

    _, art, (x,), (y,) = int4_models["test_quantizelinear_int4"]
    r = load(art.file)
    assert r.outputs[0]["dtype"] == "int4" and r.engine == "tvm-x86"
    got = r(x)
    assert got.dtype == ml_dtypes.int4
    assert_bit_equal(got, y)
    _, art, (xi,), (yi,) = int4_models["test_dequantizelinear_int4"]
    assert xi.dtype == ml_dtypes.int4
    assert_bit_equal(load(art.file)(xi), yi)
    with pytest.raises(InputError, match="dtype int8"):
        load(art.file)(xi.astype(np.int8))


def test_directories_and_targets(int4_models):
    path, art, _, _ = int4_models["test_quantizelinear_int4"]
    assert load(art.root).artifact.path == art.path
    assert load(art.root, target="x86").artifact.path == art.path
    with pytest.raises(ArtifactError, match="built for target 'x86', not 'aarch64'"):
        load(art.file, target="aarch64")
    with pytest.raises(ArtifactError, match="compile it for 'x86' first"):
        load(path, target="x86")
    with pytest.raises(ArtifactError, match="not listed"):
        load(art.file.with_name("stray.so")) if art.file.with_name("stray.so").write_bytes(b"x") else None


@pytest.mark.qemu
def test_aarch64_library_runs_under_qemu(int4_models, tmp_path):
    require_qemu()
    path, _, (x,), (y,) = int4_models["test_quantizelinear_int4"]
    art = compile_stage(path, CompileConfig(target="aarch64"), tmp_path)
    r = load(art.file)
    assert r.engine == "tvm-aarch64" and r.execution == "emulated (qemu user mode)" and art.meta["kind"] == "cpu"
    assert_bit_equal(r(x), y)


def test_threads_reach_the_tvm_thread_pool(int4_models):
    """``load(..., threads=N)`` sets the workers of TVM's thread pool that runs the module (by
    default the physical cores); more than the pool was started with is refused in one line."""
    import os
    import threading

    import tvm_ffi

    from robustq_deploy.errors import ConfigError
    from robustq_deploy.runtime import physical_cores

    workers = tvm_ffi.get_global_func("runtime.NumThreads")
    _, art, (x,), (y,) = int4_models["test_quantizelinear_int4"]
    seen: dict = {}

    def run():  # a thread of its own: TVM's pool is per calling thread, started on first use
        for n in (1, physical_cores()):
            assert_bit_equal(load(art.file, threads=n)(x), y)
            seen[n] = workers()
        load(art.file)(x)
        seen[None] = workers()
        try:
            load(art.file, threads=int(os.environ["TVM_NUM_THREADS"]) + 1)
        except ConfigError as exc:
            seen["refused"] = str(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen[1] == 1 and seen[physical_cores()] == physical_cores() and seen[None] == physical_cores()
    assert "TVM's thread pool in this process has at most" in seen["refused"]
