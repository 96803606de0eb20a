"""Two stages writing one folder at once keep each other's manifest entries: the load, add and
save of the manifest happen under one lock. The first writer is held inside its publication (it
waits while hashing its file) while the second runs; without the lock the second finishes first
and the first then saves a manifest without the second's entry."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from robustq_deploy.manifest import Manifest

from .conftest import REPO, listed_and_intact, robustq

SLOW_HASH = """
import os, time, robustq_deploy.manifest as M
_real, _marker, _release = M.sha256_file, os.environ["MARKER"], os.environ["RELEASE"]
def _slow(path):
    if "onnx" in str(path) and not os.path.exists(_marker):  # hashing its output, manifest loaded
        open(_marker, "w").close()
        end = time.time() + 15  # until the second writer is done, or for 15 s if it has to wait for us
        while not os.path.exists(_release) and time.time() < end:
            time.sleep(0.05)
    return _real(path)
M.sha256_file = _slow
"""


def test_concurrent_exports_keep_both_entries(fresh, tmp_path):
    out = fresh / "both"
    marker = tmp_path / "first-is-hashing"
    code = (f"{SLOW_HASH}\nfrom robustq_deploy.cli import main\n"
            f"main({['export', str(fresh / 'model.safetensors'), '--format', 'qdq', '--out', str(out)]!r})")
    release = tmp_path / "second-is-done"
    first = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                             env={**os.environ, "MARKER": str(marker), "RELEASE": str(release)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), first.communicate()
    second = robustq("export", fresh / "model.safetensors", "--format", "integer", "--out", out)
    release.touch()
    assert second.returncode == 0, second.stderr
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    paths = sorted(a.path for a in Manifest.load(out).artifacts)
    assert paths == ["model.integer.onnx", "model.qdq.onnx"]
    assert listed_and_intact(out) == []
