"""Build the simulation library: the emitted C compiled with the host C compiler.

The accelerator sources (kernels, DRAM weight images, host driver, ``fpga_hls.h``) and the TVM
FFI glue are compiled as C99 with every warning an error into one shared library. Symbols are
hidden except the glue's ``__tvm_ffi_*`` entry points and the driver's ``fpga_run_*`` functions,
and ``-Bsymbolic`` binds the library's own calls locally, so two simulation libraries in one
process (two models) never call into each other. The build runs in a private folder with
relative file names and no debug information, so the same sources give the same bytes.

The compiler is ``$CC`` or ``cc``; its version is recorded in the artifact.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import UnsupportedError

CFLAGS = ("-std=c99", "-O3", "-Wall", "-Werror", "-fPIC")
LDFLAGS = ("-shared", "-Wl,-Bsymbolic")


def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise UnsupportedError(f"fpga-sim needs a C compiler to build the simulation; {cc!r} not found "
                               "(set $CC or apt-get install -y gcc)")
    return cc


def compiler_version(cc: str | None = None) -> str:
    done = subprocess.run([cc or compiler(), "--version"], capture_output=True, text=True)
    return (done.stdout.strip().splitlines() or ["unknown"])[0]


def ffi_include() -> str:
    import tvm_ffi.libinfo

    return str(tvm_ffi.libinfo.find_include_path())


def build_library(sources: dict[str, str], out: Path) -> list[str]:
    """Compile ``sources`` (file name -> text) into the shared library ``out``; returns the command."""
    cc = compiler()
    with tempfile.TemporaryDirectory(prefix="robustq-fpga-") as tmp:
        for name, text in sources.items():
            (Path(tmp) / name).write_text(text)
        units = sorted(n for n in sources if n.endswith(".c"))
        cmd = [cc, *CFLAGS, f"-I{ffi_include()}", *LDFLAGS, "-o", "libfpga_sim.so", *units]
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
            raise RuntimeError(f"building the fpga-sim library failed: {first}")  # a code generator bug
        shutil.copyfile(Path(tmp) / "libfpga_sim.so", out)
    return [Path(cc).name, *CFLAGS, "-I<tvm_ffi include>", *LDFLAGS, "-o", "libfpga_sim.so", *units]


__all__ = ["CFLAGS", "LDFLAGS", "build_library", "compiler", "compiler_version", "ffi_include"]
