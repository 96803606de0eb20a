"""Target descriptions: one small TOML file per target, loaded into a typed :class:`TargetDesc`.

A description bundles the TVM target (a JSON-style dict, since TVM no longer accepts CLI target
strings), how to build a module for it (cross compiler) and how to run one (``runner``:
``native`` in this process, ``qemu-aarch64`` through :mod:`targets.toolchain`, ``fpga-sim`` from
its own issue), which ops and bit widths it supports, and where tuning records live.

Names: ``x86`` or ``aarch64`` (a shipped file), ``x86:znver4`` (the same file with ``mcpu``
replaced, to build for another CPU than this one), or a path to a user's ``.toml`` file.
``mcpu = "host"`` is resolved to the CPU LLVM detects on this machine. To add a target, add a
TOML file here; a new ``runner`` kind also needs a runner class in ``robustq_deploy/runtime.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from robustq_deploy.config import from_dict
from robustq_deploy.errors import ConfigError

HERE = Path(__file__).resolve().parent

# Integer dot-product features worth reporting (and that LLVM's vectorizer can use) per family.
DOT_PRODUCT_FEATURES = ("avx512vnni", "avxvnni", "avx512bw", "avx2", "dotprod", "i8mm", "neon")


@dataclass(frozen=True)
class TargetDesc:
    name: str
    description: str = ""
    tvm: dict[str, Any] = field(default_factory=dict)
    runner: str = "native"  # "native", "qemu-aarch64", "fpga-sim"
    cross_compiler: str | None = None  # C compiler that links the module, e.g. "aarch64-linux-gnu-gcc"
    cross_cxx: str | None = None  # C++ compiler for the runner, e.g. "aarch64-linux-gnu-g++"
    emulator: tuple[str, ...] = ()  # argv prefix that runs target binaries, e.g. qemu-aarch64 -L ...
    runtime_platform: str | None = None  # pip platform tag of the wheels holding the target's TVM runtime
    runner_source: str | None = None  # C++ runner, relative to targets/
    library_suffix: str = ".so"
    ops: tuple[str, ...] = ()
    weight_bits: tuple[str, ...] = ()
    act_bits: tuple[str, ...] = ()
    tuning_records: str | None = None  # folder relative to targets/, or absolute
    accel: str | None = None  # runner "fpga-sim": accelerator preset (targets/fpga/) or file, robustq_deploy.accel
    notes: str = ""

    def tvm_target(self):
        """The ``tvm.target.Target`` of this description, ``mcpu = "host"`` resolved."""
        import tvm

        return tvm.target.Target(self.tvm_spec())

    def tvm_spec(self) -> dict[str, Any]:
        """The TVM target dict with ``mcpu = "host"`` resolved (what the manifest records)."""
        spec = dict(self.tvm)
        if spec.get("mcpu") == "host":
            import tvm

            spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        return spec

    def cpu_features(self) -> list[str]:
        """The integer dot-product related features the TVM target enables (LLVM's view)."""
        import tvm

        target = self.tvm_target()
        return [f for f in DOT_PRODUCT_FEATURES if tvm.target.codegen.target_has_features(f, target)]

    @property
    def cross(self) -> bool:
        return self.cross_compiler is not None


def target_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def get_target(name: str) -> TargetDesc:
    """A shipped target by name (``x86``, ``aarch64``, ``x86:<mcpu>``), or a description file by path."""
    base, _, cpu = name.partition(":") if not name.endswith(".toml") else (name, "", "")
    if name.endswith(".toml") and (HERE / f"{name.partition(':')[0]}.toml").exists():  # fpga-sim:/path/accel.toml
        base, _, cpu = name.partition(":")
    path = Path(base)
    if path.suffix != ".toml":
        path = HERE / f"{base}.toml"
        if not path.exists():
            raise ConfigError(f"unknown target {name!r}; choose one of {', '.join(target_names())} or a .toml file")
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read target file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in ("weight_bits", "act_bits"):
        if key in data:
            data[key] = [str(v) for v in data[key]]
    try:
        desc = from_dict(TargetDesc, data, "target")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if cpu and desc.runner == "fpga-sim":  # the part after ':' names the accelerator, not a CPU
        return replace(desc, accel=cpu)
    if cpu:
        import tvm

        if not tvm.target.codegen.llvm_is_valid_cpu(cpu, desc.tvm.get("mtriple", tvm.target.codegen.llvm_get_system_triple())):
            raise ConfigError(f"target {name!r}: LLVM does not know the CPU {cpu!r}")
        desc = replace(desc, tvm={**desc.tvm, "mcpu": cpu})
    return desc
