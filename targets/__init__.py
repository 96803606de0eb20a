"""Target descriptions: one small TOML file per target, loaded into a typed :class:`TargetDesc`.

A description bundles the TVM target (a JSON-style dict, since TVM no longer accepts CLI target
strings), how to build and run a module for it (cross compiler, runner), which ops and bit widths
it supports, and where its tuning records live. ``mcpu = "host"`` is resolved to the CPU LLVM
detects on this machine. Users may pass a path to their own TOML file instead of a name.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustq_deploy.config import from_dict
from robustq_deploy.errors import ConfigError

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TargetDesc:
    name: str
    description: str = ""
    tvm: dict[str, Any] = field(default_factory=dict)
    runner: str = "native"  # "native", "qemu-aarch64", "fpga-sim"
    cross_compiler: str | None = None  # e.g. "aarch64-linux-gnu-gcc"
    library_suffix: str = ".so"
    ops: tuple[str, ...] = ()
    weight_bits: tuple[str, ...] = ()
    act_bits: tuple[str, ...] = ()
    tuning_records: str | None = None  # folder relative to targets/, or absolute
    notes: str = ""

    def tvm_target(self):
        """The ``tvm.target.Target`` of this description, ``mcpu = "host"`` resolved."""
        import tvm

        spec = dict(self.tvm)
        if spec.get("mcpu") == "host":
            spec["mcpu"] = tvm.target.codegen.llvm_get_system_cpu()
        return tvm.target.Target(spec)


def target_names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.toml"))


def get_target(name: str) -> TargetDesc:
    """A shipped target by name (``x86``, ``aarch64``), or a description file by path."""
    path = Path(name)
    if path.suffix != ".toml":
        path = HERE / f"{name}.toml"
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
        return from_dict(TargetDesc, data, "target")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
