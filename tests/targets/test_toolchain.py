"""The aarch64 toolchain: per-user cache location, runtime + runner built once, and the runner
round-tripping .npy files of every dtype it supports through a module under qemu."""
from __future__ import annotations

import numpy as np
import pytest

from robustq_deploy.targets import get_target
from robustq_deploy.targets.toolchain import cache_root, ensure_toolchain, missing_tools


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTQ_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("ROBUSTQ_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "robustq-deploy"


@pytest.mark.qemu
def test_runner_runs_a_module_under_qemu(tmp_path):
    desc = get_target("aarch64")
    if missing_tools(desc):
        pytest.skip(f"{', '.join(missing_tools(desc))} not installed")
    tc = ensure_toolchain(desc)
    assert ensure_toolchain(desc) == tc and tc.runner.exists()  # idempotent: built once
    import subprocess

    import tvm
    from tvm import relax

    from robustq_deploy.compile.build import export_library

    bb = relax.BlockBuilder()
    n = tvm.tirx.Var("n", "int64")
    a = relax.Var("a", relax.TensorType([n, 3], "int8"))
    b = relax.Var("b", relax.TensorType([3], "uint16"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            s = bb.emit(relax.op.add(relax.op.astype(a, "int32"), relax.op.astype(b, "int32")))
            out = bb.emit_output(relax.Tuple([s, relax.op.astype(s, "float32")]))
        bb.emit_func_output(out)
    lib = tmp_path / "m.so"
    export_library(tvm.compile(bb.get(), desc.tvm_target()), lib, desc)
    x = np.array([[-128, 0, 127], [1, 2, 3]], np.int8)
    y = np.array([65535, 1, 0], np.uint16)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", y)
    done = subprocess.run([*tc.command, str(lib), str(tmp_path), str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    want = x.astype(np.int32) + y.astype(np.int32)
    assert np.array_equal(np.load(tmp_path / "out_0.npy"), want)
    assert np.load(tmp_path / "out_1.npy").dtype == np.float32
    bad = subprocess.run([*tc.command, str(tmp_path / "missing.so"), str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("runner:")
