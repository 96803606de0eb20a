"""Target descriptions: one small TOML file per target, read once into a typed :class:`TargetDesc`.

A description is data: which backend compiles and runs it (``kind``: ``cpu`` for code that runs
on a CPU, in this process or under an emulator; ``accel`` for the FPGA-like accelerator of
:mod:`robustq_deploy.accel`; the backends register themselves with
:mod:`robustq_deploy.compile.backend`), the TVM target (a JSON-style dict, since TVM no longer
accepts CLI target strings), the instruction set the build emits (``isa``), the kernel
libraries a compile uses (``kernels``) and their tile records, how to link a module (cross
compiler) and how to run one elsewhere (emulator, runner source, runtime wheels), and the ops
a target restricts itself to. What the CPU can execute (dot-product and popcount instructions)
is read from LLVM for the description's TVM target: :meth:`TargetDesc.features`.

Names, one rule for all (:func:`split_target_name`): ``NAME`` or ``NAME:VALUE``, where ``NAME``
is a shipped description (``x86``, ``aarch64``, ``fpga-sim``: the TOML files of this folder) or
the path of a ``.toml`` file, and ``VALUE`` sets the field the description names as its
``variant``: the CPU (``x86:znver4``, LLVM's ``mcpu``) or the accelerator (``fpga-sim:edge-large``,
``fpga-sim:/path/to/accel.toml``). ``mcpu = "host"`` is resolved to the CPU LLVM detects here.

To add a target of an existing kind, add a TOML file (here, or anywhere and pass its path);
a new kind needs a backend module (see :mod:`robustq_deploy.compile.backend`). Relative paths
in a description (``runner_source``, ``tile_records``) are files shipped in this folder.
"""
from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from ..config import from_dict, to_dict
from ..errors import ConfigError
from ..tomlfile import read_toml

ISAS = ("x86_64", "aarch64")
VARIANTS = ("mcpu", "accel")

# Integer dot-product features worth reporting (and that LLVM's vectorizer can use) per family.
DOT_PRODUCT_FEATURES = ("avx512vnni", "avxvnni", "avx512bw", "avx2", "dotprod", "i8mm", "neon")


def shipped():
    """This folder, as package data."""
    return resources.files(__name__)


@dataclass(frozen=True)
class TargetDesc:
    name: str
    kind: str = ""  # the backend: "cpu", "accel" (robustq_deploy.compile.backend)
    description: str = ""
    isa: str = ""  # "x86_64" or "aarch64": the instruction set of the code the build emits
    tvm: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None  # what NAME:VALUE sets: "mcpu" (tvm.mcpu) or "accel"
    kernels: tuple[str, ...] = ()  # kernel libraries the compile uses ("tiled"); (): TVM's generic lowering
    tile_records: str | None = None  # folder of kernel tile records (JSON), in this folder or absolute
    cross_compiler: str | None = None  # C compiler that links the module, e.g. "aarch64-linux-gnu-gcc"
    cross_cxx: str | None = None  # C++ compiler for the runner, e.g. "aarch64-linux-gnu-g++"
    emulator: tuple[str, ...] = ()  # argv prefix that runs target binaries, e.g. qemu-aarch64 -L ...
    runtime_platform: str | None = None  # pip platform tag of the wheels holding the target's TVM runtime
    runner_source: str | None = None  # C++ runner of emulated targets, in this folder or absolute
    library_suffix: str = ".so"
    ops: tuple[str, ...] = ()  # restrict the target to these ops (empty: everything the importer converts)
    accel: str | None = None  # kind "accel": accelerator preset (targets/fpga/) or file, robustq_deploy.accel

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

    def features(self):
        """What the target CPU executes (:class:`robustq_deploy.kernels.features.Features`), as
        LLVM reports it for the TVM target; refused when it contradicts the declared ``isa``."""
        feats = _features(json.dumps(self.tvm_spec(), sort_keys=True))
        if self.isa and feats.arch != self.isa:
            raise ConfigError(f"target {self.name}: isa = {self.isa!r}, but its TVM target {self.tvm_spec()} "
                              f"builds {feats.arch} code")
        return feats

    def cpu_features(self) -> list[str]:
        """The integer dot-product related features the TVM target enables (LLVM's view)."""
        import tvm

        target = self.tvm_target()
        return [f for f in DOT_PRODUCT_FEATURES if tvm.target.codegen.target_has_features(f, target)]

    @property
    def cross(self) -> bool:
        return self.cross_compiler is not None

    @property
    def emulated(self) -> bool:
        """Whether its code runs under an emulator rather than in this process."""
        return bool(self.emulator)

    @contextlib.contextmanager
    def file(self, rel: str) -> Iterator[Path]:
        """A file or folder the description names (``runner_source``, ``tile_records``) as a path."""
        if Path(rel).is_absolute():
            yield Path(rel)
            return
        with resources.as_file(shipped().joinpath(*Path(rel).parts)) as p:
            yield p

    def tile_record_files(self) -> list:
        """The JSON files of ``tile_records`` (none when the description names no folder)."""
        if not self.tile_records:
            return []
        folder = Path(self.tile_records) if Path(self.tile_records).is_absolute() else \
            shipped().joinpath(*Path(self.tile_records).parts)
        if not folder.is_dir():
            raise ConfigError(f"target {self.name}: tile_records {self.tile_records!r} is not a folder")
        return sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)

    def as_meta(self) -> dict[str, Any]:
        """The description as plain data (the manifest records it; :meth:`from_meta` reads it back)."""
        return to_dict(self)

    @classmethod
    def from_meta(cls, data: Any) -> "TargetDesc":
        if not isinstance(data, dict):
            raise ConfigError("target description: expected a table")
        return _checked(from_dict(cls, data, "target"), "target description")


@functools.lru_cache(maxsize=16)
def _features(spec_json: str):
    from ..kernels.features import features_of

    return features_of(json.loads(spec_json))


def _checked(desc: TargetDesc, where: str) -> TargetDesc:
    problems = []
    if not desc.kind:
        problems.append("kind: missing (the backend that builds and runs it, e.g. \"cpu\")")
    if desc.isa and desc.isa not in ISAS:
        problems.append(f"isa: unknown value {desc.isa!r}; choose one of {', '.join(ISAS)}")
    if desc.variant is not None and desc.variant not in VARIANTS:
        problems.append(f"variant: unknown value {desc.variant!r}; choose one of {', '.join(VARIANTS)}")
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}")
    return desc


def target_names() -> list[str]:
    return sorted(f.name[:-5] for f in shipped().iterdir() if f.name.endswith(".toml"))


def target_help() -> str:
    """The shipped targets with their descriptions (the CLI's help text)."""
    return "; ".join(f"{n} ({_read(shipped() / f'{n}.toml').description})" for n in target_names())


def split_target_name(name: str) -> tuple[str, str]:
    """``NAME[:VALUE]`` -> ``(NAME, VALUE)`` (``VALUE`` empty when absent)."""
    base, _, value = name.partition(":")
    return base, value


def _read(source) -> TargetDesc:
    data = read_toml(source, "target file")
    try:
        return _checked(from_dict(TargetDesc, data, "target"), str(source))
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(str(source)) else f"{source}: {msg}") from None


def get_target(name: str) -> TargetDesc:
    """The description of target ``name`` (see the module docstring for the names)."""
    base, value = split_target_name(name)
    if base.endswith(".toml"):
        desc = _read(Path(base))
    elif base in target_names():
        desc = _read(shipped() / f"{base}.toml")
    else:
        raise ConfigError(f"unknown target {name!r}; choose one of {', '.join(target_names())} or a .toml file")
    if not value:
        return desc
    if desc.variant is None:
        raise ConfigError(f"target {name!r}: {desc.name} has no variants (nothing to set to {value!r})")
    if desc.variant == "accel":
        return replace(desc, accel=value)
    import tvm

    triple = desc.tvm.get("mtriple", tvm.target.codegen.llvm_get_system_triple())
    if not tvm.target.codegen.llvm_is_valid_cpu(value, triple):
        raise ConfigError(f"target {name!r}: LLVM does not know the CPU {value!r}")
    return replace(desc, tvm={**desc.tvm, "mcpu": value})


__all__ = ["DOT_PRODUCT_FEATURES", "ISAS", "TargetDesc", "get_target", "shipped", "split_target_name",
           "target_help", "target_names"]
