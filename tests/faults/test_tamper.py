"""Tampering: what runs and what CI approves are exactly the bytes the manifest recorded.

* a library swapped for another between the hash check and the load is never the one that runs
  (the loader maps a private copy made while hashing), not even its ELF constructor;
* a library or other artifact whose bytes changed, and manifest entries that point outside the
  folder, are refused with one line;
* the entry a folder selection picks is checked against its own hash.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import robustq_deploy
from robustq_deploy.errors import ArtifactError

from .conftest import one_line_error, robustq

CONSTRUCTOR_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *p = getenv("ROBUSTQ_PLANTED");
    if (p) { FILE *f = fopen(p, "w"); if (f) { fputs("ran", f); fclose(f); } }
}
"""


@pytest.fixture(scope="module")
def planted_library(tmp_path_factory):
    """A shared library whose ELF constructor writes the file named by $ROBUSTQ_PLANTED."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (needed to build the planted library)")
    d = tmp_path_factory.mktemp("planted")
    (d / "planted.c").write_text(CONSTRUCTOR_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "planted.so"), str(d / "planted.c")], check=True)
    return d / "planted.so"


def _swap_at_load(monkeypatch, target, replacement):
    """Replace ``target`` by ``replacement`` (rename, as an attacker would) the moment TVM is asked
    to load a module: after every hash check the loader does."""
    import tvm

    real = tvm.runtime.load_module
    seen = []

    def swapping(path, *args, **kw):
        if not seen:
            tmp = target.with_name(target.name + ".swap")
            shutil.copyfile(replacement, tmp)
            tmp.replace(target)
        seen.append(str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(tvm.runtime, "load_module", swapping)
    return seen


def _outputs_of_a_copy(folder, tmp_path, x):
    """The library's outputs, loaded from a copy of its folder (the dynamic loader reuses a library
    already loaded from the same path, so the original path must not be loaded before the swap)."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return robustq_deploy.load(copy / "model.x86.so")(x)


def test_swapped_library_does_not_run(fresh, planted_library, tmp_path, monkeypatch):
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    want = _outputs_of_a_copy(fresh, tmp_path, x)
    marker = tmp_path / "planted-ran"
    monkeypatch.setenv("ROBUSTQ_PLANTED", str(marker))
    seen = _swap_at_load(monkeypatch, fresh / "model.x86.so", planted_library)
    got = robustq_deploy.load(fresh / "model.x86.so")(x)
    assert not marker.exists(), "the swapped-in library's constructor ran"
    np.testing.assert_array_equal(got, want)  # the checked bytes ran
    assert seen and all(p != str(fresh / "model.x86.so") for p in seen)  # loaded from a private copy
    with pytest.raises(ArtifactError, match="does not match the manifest"):  # the next load sees the swap
        robustq_deploy.load(fresh / "model.x86.so")


@pytest.fixture(scope="module")
def other_library(tmp_path_factory):
    """A valid tool-built library of another model (trained with another seed)."""
    from robustq_deploy.compile import compile_stage
    from robustq_deploy.config import CompileConfig, ExportConfig, replace
    from robustq_deploy.export import export_stage
    from robustq_deploy.train import train_stage

    from .conftest import run_config

    out = tmp_path_factory.mktemp("other")
    ckpt = train_stage(replace(run_config(), **{"train.seed": 1}), out, progress=False)
    onnx_art = export_stage(ckpt.file, ExportConfig(format="qdq"), out)
    return compile_stage(onnx_art.file, CompileConfig(target="x86"), out).file


def test_another_tool_built_library_swapped_in_at_load(fresh, other_library, tmp_path, monkeypatch):
    """The swap happens after every check: the outputs are still the checked library's."""
    x = np.random.default_rng(1).random((16, 1, 8, 8), dtype=np.float32)
    want = _outputs_of_a_copy(fresh, tmp_path, x)
    theirs = robustq_deploy.load(other_library)(x)
    assert not np.array_equal(want, theirs)  # the swap would show
    _swap_at_load(monkeypatch, fresh / "model.x86.so", other_library)
    np.testing.assert_array_equal(robustq_deploy.load(fresh / "model.x86.so")(x), want)


def test_another_tool_built_library_in_place_is_refused(fresh, other_library, tmp_path):
    shutil.copyfile(other_library, fresh / "model.x86.so")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 1, 8, 8), np.float32))
    err = one_line_error(robustq("infer", fresh / "model.x86.so", "--input", x, "--output", tmp_path / "y.npy"))
    assert "does not match the manifest" in err
    assert not (tmp_path / "y.npy").exists()


def test_a_library_that_is_not_a_relax_module(fresh, planted_library, tmp_path):
    """Listed with its true hash, but not a TVM executable: one line, no traceback."""
    from robustq_deploy.manifest import Manifest, sha256_file

    shutil.copyfile(planted_library, fresh / "model.x86.so")
    m = json.loads((fresh / "manifest.json").read_text())
    for a in m["artifacts"]:
        if a["path"] == "model.x86.so":
            a["sha256"] = sha256_file(fresh / "model.x86.so")
    (fresh / "manifest.json").write_text(json.dumps(m))
    assert Manifest.load(fresh).find(fresh / "model.x86.so") is not None
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 1, 8, 8), np.float32))
    err = one_line_error(robustq("infer", fresh / "model.x86.so", "--input", x, "--output", tmp_path / "y.npy",
                                 env={"ROBUSTQ_PLANTED": str(tmp_path / "ran")}))
    assert "TVM cannot load it" in err or "not a TVM Relax executable" in err


@pytest.mark.parametrize("path", ["/etc/passwd", "../../other/model.x86.so", "sub/../../x.so"])
def test_entries_that_leave_the_folder_are_refused(fresh, tmp_path, path):
    m = json.loads((fresh / "manifest.json").read_text())
    m["artifacts"][-1]["path"] = path
    (fresh / "manifest.json").write_text(json.dumps(m))
    err = one_line_error(robustq("infer", fresh, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"))
    assert "leaves the artifact folder" in err and "corrupt manifest" in err


def test_folder_selection_checks_the_selected_entry(fresh, tmp_path):
    """Two entries for one path: the one the folder selection picks (target x86) no longer matches
    the file, while another entry for the same path does; the picked entry's own hash decides."""
    m = json.loads((fresh / "manifest.json").read_text())
    lib = next(a for a in m["artifacts"] if a["kind"] == "compiled")
    other = dict(lib, meta=dict(lib["meta"], target="x86-old"))  # matches the file
    lib["sha256"] = "f" * 64
    m["artifacts"].insert(0, other)
    (fresh / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        robustq_deploy.load(fresh, target="x86")


def test_modified_checkpoint_and_onnx_are_refused(fresh, tmp_path):
    for name, cmd in (("model.safetensors", ["export", fresh / "model.safetensors", "--out", tmp_path / "e"]),
                      ("model.qdq.onnx", ["compile", fresh / "model.qdq.onnx", "--out", tmp_path / "c"])):
        f = fresh / name
        data = f.read_bytes()
        f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        err = one_line_error(robustq(*cmd))
        assert "does not match the manifest" in err and "run that stage again" in err
        f.write_bytes(data)
