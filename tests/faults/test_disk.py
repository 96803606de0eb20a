"""Read-only and full output folders, and --out under a regular file: one line naming the file
and the cause, exit 2, before any long work; a write that fails part-way changes nothing.

Uses a small tmpfs mounted by the test (as root); elsewhere these tests are skipped with the
reason printed.
"""
from __future__ import annotations

import contextlib
import os
import subprocess

import pytest

from .conftest import listed_and_intact, refused


@contextlib.contextmanager
def _tmpfs(path, size_kib: int, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; read-only and full-disk cases not run")
    opts = f"size={size_kib}k" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); read-only and full-disk cases not run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder, leave_kib: int) -> None:
    """Fill the filesystem of ``folder`` until about ``leave_kib`` KiB remain."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave_kib * 1024, 0))


@pytest.mark.parametrize("stage", ["export", "compile", "verify", "train"])
def test_read_only_output_folder(fresh, tmp_path, capsys, stage):
    with _tmpfs(tmp_path / "ro", 1024, read_only=True) as ro:
        args = {"export": ["export", fresh / "model.safetensors"],
                "compile": ["compile", fresh / "model.qdq.onnx"],
                "verify": ["verify", fresh / "model.x86.so", "--limit", "8"],
                "train": ["train", "--set", "train.epochs=1"]}[stage]
        err = refused(capsys, *args, "--out", ro / "out")
        assert "Read-only file system" in err and str(ro / "out") in err


def test_out_under_a_regular_file(fresh, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = refused(capsys, "export", fresh / "model.safetensors", "--out", tmp_path / "file" / "out")
    assert "a parent is a regular file" in err


def test_infer_output_on_a_read_only_folder(fresh, tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    with _tmpfs(tmp_path / "ro", 64, read_only=True) as ro:
        err = refused(capsys, "infer", fresh / "model.x86.so", "--input", tmp_path / "x.npy", "--output", ro / "y.npy")
        assert "Read-only file system" in err


def test_full_disk_at_every_write(fresh, tmp_path, capsys):
    """Export into a folder that already holds an export, with less and less room: every failure is
    one line naming the file, and leaves the previous files and manifest exactly as they were."""
    from tests.helpers import run_cli

    size = (fresh / "model.qdq.onnx").stat().st_size
    outcomes = []
    for leave in range(0, size // 1024 + 24, 4):
        with _tmpfs(tmp_path / f"full{leave}", 2048) as disk:
            out = disk / "out"
            code, _, err = run_cli(["export", fresh / "model.safetensors", "--format", "integer", "--out", out], capsys)
            assert code == 0, err
            before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
            _fill(disk, leave)
            code, _, err = run_cli(["export", fresh / "model.safetensors", "--out", out], capsys)
            if code == 0:
                outcomes.append("ok")
                assert listed_and_intact(out) == []
                continue
            outcomes.append("full")
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0], err
            after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".manifest.lock"}
            assert after == {k: v for k, v in before.items() if k != ".manifest.lock"}, leave
    assert "full" in outcomes and outcomes[-1] == "ok", outcomes
