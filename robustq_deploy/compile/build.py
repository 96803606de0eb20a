"""Lower, build and export a Relax module for a target description.

:func:`lower` legalizes the Relax operators into TIR and fuses them (TVM's ``zero`` pipeline,
under the target, with the tuning database applied when one is given); :func:`build` turns
that into a Relax VM executable; :func:`export_library` links it into a shared library with
the target's compiler (the Debian cross gcc for aarch64) and writes it atomically.

Libraries are deterministic: the same module and target give the same bytes (the tests check
it), because the code generator and the linker get the same inputs and no time stamps.
"""
from __future__ import annotations

from pathlib import Path

from ..manifest import atomic_path


def lower(mod, desc, database=None):
    """Legalized, fused module (what :mod:`.inspect` examines and :func:`build` compiles); with
    a MetaSchedule ``database``, the tuned schedules replace the fused functions they cover."""
    from tvm import relax

    from .tune import tuning_target

    if database is None:
        with desc.tvm_target():
            return relax.get_pipeline("zero")(mod)
    with tuning_target(desc), database:
        return relax.get_pipeline("zero")(mod)


def build(lowered, desc, tuned: bool = False):
    """A Relax VM executable of a lowered module (``tuned``: lowered with a tuning database)."""
    import tvm

    from .tune import tuning_target

    return tvm.compile(lowered, target=tuning_target(desc) if tuned else desc.tvm_target())


def export_library(ex, path: str | Path, desc) -> None:
    """Write the executable as a shared library (cross-linked when the target says so)."""
    from tvm.support import cc

    fcompile = cc.cross_compiler(desc.cross_compiler) if desc.cross_compiler else None
    with atomic_path(path) as tmp:
        lib_tmp = tmp.with_suffix(desc.library_suffix)
        try:
            if fcompile is None:
                ex.export_library(str(lib_tmp))
            else:
                ex.export_library(str(lib_tmp), fcompile=fcompile)
            lib_tmp.replace(tmp)
        finally:
            lib_tmp.unlink(missing_ok=True)


__all__ = ["build", "export_library", "lower"]
