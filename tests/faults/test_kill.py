"""kill -9 at every commit point of every stage: the folder then shows either the old set of
files or the new one (never a half-written or unlisted artifact, never a listed file with other
bytes), and running the stage again completes.

A commit point is a rename into the artifact folder (the publication's journal, each staged
file, the manifest): the stage runs in a child process whose ``os.replace`` sends SIGKILL to
itself at the k-th such rename, for every k until the stage finishes unharmed.
"""
from __future__ import annotations

import json
import signal

import pytest

from robustq_deploy.manifest import JOURNAL_SUFFIX, Manifest

from .conftest import VERIFY, listed_and_intact, robustq

KILLER = """
import os, signal
_real, _count = os.replace, [0]
_at, _folder = int(os.environ["KILL_AT"]), os.path.realpath(os.environ["KILL_FOLDER"])

def _replace(src, dst, *args, **kw):
    d = os.path.realpath(os.fspath(dst))
    if d.startswith(_folder + os.sep) and not d.endswith("state.safetensors"):
        _count[0] += 1
        if _count[0] == _at:
            os.kill(os.getpid(), signal.SIGKILL)
    return _real(src, dst, *args, **kw)

os.replace = _replace
"""


def _kill_everywhere(folder, args, expect_kind, after_kill=None):
    """Run ``robustq ARGS`` killed at the 1st, 2nd, ... commit point into ``folder``, checking the
    folder after each kill and after the re-run that completes; returns the number of points."""
    k = 0
    while True:
        k += 1
        done = robustq(*args, env={"KILL_AT": str(k), "KILL_FOLDER": str(folder)}, prelude=KILLER)
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, (k, done.returncode, done.stderr[-2000:])
        assert listed_and_intact(folder) == [], k  # the next reader completed or discarded the publication
        assert not list(folder.glob(f".publish.*{JOURNAL_SUFFIX}")), k
        if after_kill is not None:
            after_kill(folder, k)
    assert k > 2  # journal, the files, the manifest
    assert listed_and_intact(folder) == []
    assert not list(folder.glob(".*.tmp"))  # the re-run's publication removed the killed runs' temp files
    assert any(a.kind == expect_kind for a in Manifest.load(folder).artifacts)
    return k - 1


def test_kill_during_export(fresh):
    out = fresh / "e"
    assert _kill_everywhere(out, ["export", fresh / "model.safetensors", "--format", "integer", "--out", out], "onnx") >= 3


def test_kill_during_export_into_a_folder_that_has_the_file(fresh):
    """Replacing an existing artifact: after any kill the listed bytes are the old or the new ones."""
    assert _kill_everywhere(fresh, ["export", fresh / "model.safetensors", "--out", fresh], "onnx") >= 3


def test_kill_during_train(tmp_path):
    """Two epochs: the state saved after the first stays until the checkpoint is listed, so a kill
    at the commit never sends the next run back to epoch 0."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\ndataset = "digits"\n[model]\narch = "digits-cnn"\n[train]\nmethod = "qat"\nepochs = 2\n'
                   "threads = 1\n")
    out = tmp_path / "t"

    def checkpoint_or_state(folder, k):
        listed = any(a.kind == "checkpoint" for a in Manifest.load(folder).artifacts)
        assert listed or (folder / "model.train-state.safetensors").exists(), k

    assert _kill_everywhere(out, ["train", "--config", cfg, "--out", out], "checkpoint", checkpoint_or_state) >= 3


@pytest.mark.slow
def test_kill_during_compile(fresh):
    out = fresh / "c"
    assert _kill_everywhere(out, ["compile", fresh / "model.qdq.onnx", "--out", out], "compiled") >= 3


@pytest.mark.slow
def test_kill_during_verify(fresh):
    """Four outputs and the manifest: after a kill, check never sees a report that is not listed."""
    out = fresh / "v"
    args = ["verify", fresh / "model.x86.so", "--attacks", "pgd", "--steps", "2", "--limit", "16",
            "--batch-size", "16", "--no-float", "--threads", "1", "--out", out]
    n = _kill_everywhere(out, args, "report")
    assert n >= 6
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == VERIFY["limit"]
