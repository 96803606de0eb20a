"""What installs: the package with its kernels, targets and their data, and nothing at the top
level besides it (an unrelated, widely used PyPI package is called ``kernels``)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_one_package_with_its_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("robustq_deploy", "kernels", "targets"):  # robustq_deploy/kernels and /targets stay links
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    assert (src / "robustq_deploy" / "kernels").is_symlink() and (src / "robustq_deploy" / "targets").is_symlink()
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "No module named" in done.stderr and "setuptools" in done.stderr:
        pytest.skip("setuptools is not installed in this environment")
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("robustq_deploy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"robustq_deploy", wheel.name.split("-py3")[0] + ".dist-info"}
    for f in ("robustq_deploy/kernels/int8_conv2d.py", "robustq_deploy/targets/x86.toml",
              "robustq_deploy/targets/toolchain.py", "robustq_deploy/targets/aarch64/runner.cc",
              "robustq_deploy/targets/fpga/edge-small.toml", "robustq_deploy/targets/records/x86-cascadelake.json",
              "robustq_deploy/configs/digits-demo.toml"):
        assert f in names, f
