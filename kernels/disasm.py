"""Disassembly checks: does a built library contain the instructions the kernels are meant to use?

:func:`instruction_counts` disassembles a shared library (``objdump -d``, or the aarch64 cross
``objdump``) and counts mnemonics; :data:`EXPECTED` says which mnemonics prove that the int8
dot-product and the popcount paths were emitted for a target's features, and :func:`check`
turns counts into a pass/fail record. These back the benchmark's and the tests' claims that the
module uses ``vpdpbusd`` / ``sdot`` and a vector popcount rather than a scalar fallback.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from .features import Features

OBJDUMP = {"x86_64": "objdump", "aarch64": "aarch64-linux-gnu-objdump"}


def objdump_for(arch: str) -> str | None:
    """Path of an objdump that reads ``arch`` code (None when not installed)."""
    for name in (OBJDUMP[arch], "llvm-objdump"):
        path = shutil.which(name)
        if path:
            return path
    return None


def instruction_counts(lib: str | Path, arch: str = "x86_64") -> Counter:
    """Mnemonic -> count over the library's code sections."""
    tool = objdump_for(arch)
    if tool is None:
        raise FileNotFoundError(f"no objdump for {arch} (install binutils / binutils-aarch64-linux-gnu)")
    out = subprocess.run([tool, "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True, check=True).stdout
    counts: Counter = Counter()
    for line in out.splitlines():
        m = re.match(r"\s*[0-9a-f]+:\s+([a-z][\w.]*)", line)
        if m:
            counts[m.group(1)] += 1
    return counts


def expected(features: Features, binary: bool) -> dict[str, tuple[str, ...]]:
    """Instruction groups that must appear (any mnemonic of each group) for these features."""
    want: dict[str, tuple[str, ...]] = {}
    if features.arch == "aarch64":
        if features.dotprod:
            want["int8 dot product"] = ("sdot", "udot")
        if binary:
            want["popcount"] = ("cnt",)
        return want
    if features.vnni:
        want["int8 dot product"] = ("vpdpbusd",)
    if binary:
        if features.vpopcntdq:
            want["popcount"] = ("vpopcntd", "vpopcntq")
        elif features.bitalg:
            want["popcount"] = ("vpopcntb", "vpopcntw", "vpopcntd")
        else:  # nibble-table popcount: vpshufb lookups summed by vpdpbusd (see robustq_deploy.kernels.intrin)
            want["popcount"] = ("vpshufb",)
    return want


def check(lib: str | Path, features: Features, binary: bool) -> dict:
    """Counts of the expected instruction groups and whether every group is present."""
    counts = instruction_counts(lib, features.arch)
    groups = {name: {m: counts[m] for m in mnems} for name, mnems in expected(features, binary).items()}
    return {"arch": features.arch, "groups": groups,
            "ok": all(sum(g.values()) > 0 for g in groups.values())}
