"""Cross toolchains and emulated runners for targets whose code cannot run on this machine.

A target with a ``runtime_platform`` (aarch64) runs its modules through a small C++ runner
(``runner_source``) linked against the TVM runtime of the apache-tvm wheels for that platform,
started under its ``emulator`` (qemu-user). This module fetches those wheels with pip (same
versions as the installed TVM), unpacks the two runtime libraries and the tvm-ffi headers,
and builds the runner with the target's cross C++ compiler. Everything lives in a per-user
cache, never in the repository::

    $ROBUSTQ_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/robustq-deploy)
      tvm-runtime-<isa>-<tvm version>/lib/{libtvm_runtime.so,libtvm_ffi.so}
      tvm-runtime-<isa>-<tvm version>/include/...
      tvm-runtime-<isa>-<tvm version>/runner-<sha256 of the runner source, 12 hex>

Set up ahead of time (CI does this once) and print the paths::

    python -m robustq_deploy.targets.toolchain aarch64

Needs the Debian packages ``gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user`` and pip
access to the package registry the first time.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from robustq_deploy.errors import UnsupportedError

from . import TargetDesc, get_target

APT_HINT = "apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user"
_LIBS = {"tvm/lib/libtvm_runtime.so": "lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so": "lib/libtvm_ffi.so"}


def cache_root() -> Path:
    env = os.environ.get("ROBUSTQ_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robustq-deploy"


@dataclass(frozen=True)
class Toolchain:
    """Where a target's runtime and runner live, and how to start the runner."""

    desc: TargetDesc
    root: Path
    runner: Path

    @property
    def command(self) -> list[str]:
        """argv prefix that starts the runner (emulator first)."""
        return [*self.desc.emulator, str(self.runner)]


def missing_tools(desc: TargetDesc) -> list[str]:
    tools = [t for t in (desc.cross_compiler, desc.cross_cxx, *desc.emulator[:1]) if t]
    return [t for t in tools if shutil.which(t) is None]


def require_tools(desc: TargetDesc) -> None:
    missing = missing_tools(desc)
    if missing:
        raise UnsupportedError(f"target {desc.name}: {', '.join(missing)} not found; install with: {APT_HINT}")


def runtime_root(desc: TargetDesc) -> Path:
    """Where the TVM runtime for the description's instruction set is unpacked (shared by every
    target of that ``isa``)."""
    return cache_root() / f"tvm-runtime-{desc.isa or desc.name}-{version('apache-tvm')}"


def _fetch_runtime(desc: TargetDesc, root: Path) -> None:
    """Download the target platform's apache-tvm / apache-tvm-ffi wheels and unpack the runtime."""
    pins = [f"apache-tvm=={version('apache-tvm')}", f"apache-tvm-ffi=={version('apache-tvm-ffi')}"]
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        wheels, stage = Path(tmp) / "wheels", Path(tmp) / "stage"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", desc.runtime_platform, "-d", str(wheels), *pins]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise UnsupportedError(f"target {desc.name}: cannot download the TVM runtime wheels ({last})")
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                for member in z.namelist():
                    if member in _LIBS:
                        dest = stage / _LIBS[member]
                    elif member.startswith("tvm_ffi/include/") and not member.endswith("/"):
                        dest = stage / "include" / member[len("tvm_ffi/include/"):]
                    else:
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(member))
        absent = [p for p in _LIBS.values() if not (stage / p).exists()]
        if absent:
            raise UnsupportedError(f"target {desc.name}: the downloaded wheels lack {', '.join(absent)}")
        if root.exists():
            shutil.rmtree(root)
        os.replace(stage, root)


def _build_runner(desc: TargetDesc, root: Path, source: Path, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [desc.cross_cxx, "-std=c++17", "-O2", "-I", str(root / "include"), str(source), "-o", str(tmp),
           "-L", str(root / "lib"), "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN/lib"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["compiler failed"])[0]
        raise UnsupportedError(f"target {desc.name}: cannot build the runner ({first})")
    os.replace(tmp, out)


def ensure_toolchain(desc: TargetDesc) -> Toolchain:
    """The target's runtime and runner, fetched and built on first use (idempotent)."""
    if not (desc.runtime_platform and desc.runner_source and desc.cross_cxx):
        raise UnsupportedError(f"target {desc.name}: has no emulated runner")
    require_tools(desc)
    root = runtime_root(desc)
    if not all((root / p).exists() for p in _LIBS.values()):
        _fetch_runtime(desc, root)
    with desc.file(desc.runner_source) as source:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
        runner = root / f"runner-{digest}"
        if not runner.exists():
            _build_runner(desc, root, source, runner)
    return Toolchain(desc, root, runner)


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or ["aarch64"]
    for name in names:
        tc = ensure_toolchain(get_target(name))
        print(f"{name}: runtime {tc.root}  runner {tc.runner}  command {' '.join(tc.command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
