"""Target backends: what builds and runs the code of one kind of target.

A target description (:class:`robustq_deploy.targets.TargetDesc`) names its ``kind``; the backend
registered for that kind owns everything kind-specific, so the compile stage and the runtime
never test target names:

* :meth:`Backend.check` refuses, before any work, options the kind cannot honour (a missing cross
  compiler, tuning where nothing is measured, an unknown kernel library, ...);
* :meth:`Backend.build` turns the prepared model (:class:`robustq_deploy.compile.Prepared`) into
  the library at ``lib_path`` (and any files beside it) and returns the compile metadata;
* :meth:`Backend.runner` loads a compiled artifact for :func:`robustq_deploy.load`;
* :meth:`Backend.describe` says, in lines for the command line, what the build did.

The shipped backends: ``cpu`` (:mod:`robustq_deploy.compile.cpu`: x86 in this process, aarch64
under qemu-user) and ``accel`` (:mod:`robustq_deploy.accel.backend`: the FPGA-like accelerator
with its simulation). Each registers itself with ``@BACKENDS.register(kind)`` when its module is
imported; :data:`BACKENDS` imports the shipped modules the first time it is read (they import
this package, so this package does not import them). A new kind is one module with a
:class:`Backend` subclass, listed in :data:`SHIPPED`, plus its test.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Registry

if TYPE_CHECKING:  # annotations only
    from ..manifest import Artifact
    from ..targets import TargetDesc
    from . import CompileOptions, Prepared


# kind -> the module that registers its backend
SHIPPED = {"cpu": "robustq_deploy.compile.cpu", "accel": "robustq_deploy.accel.backend"}


class Backend:
    """Base of the target backends (every method but :meth:`build` and :meth:`runner` has a default)."""

    kind = ""

    def check(self, options: "CompileOptions") -> None:
        """Refuse what this kind cannot do with ``options``, before anything is built."""

    def build(self, prepared: "Prepared", options: "CompileOptions", lib_path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def runner(self, artifact: "Artifact", desc: "TargetDesc", threads: int | None = None):
        raise NotImplementedError

    def describe(self, meta: dict[str, Any], out_dir: Path) -> list[str]:
        """Lines the command line prints after a build (beyond the common ones)."""
        return []


def _load_shipped() -> None:
    for module in SHIPPED.values():
        importlib.import_module(module)


BACKENDS: Registry[Backend] = Registry("target kind", key="target kind", load=_load_shipped)


def backend_for(desc: "TargetDesc") -> Backend:
    return BACKENDS.get(desc.kind, key=f"target {desc.name}: kind")


__all__ = ["BACKENDS", "Backend", "SHIPPED", "backend_for"]
