"""The ``cpu`` backend: targets whose code runs on a CPU (x86 here, aarch64 under an emulator).

Build: when the target lists kernel libraries and the prepared graph matches the fused patterns,
one network of fused kernels (:func:`.fused.build_fused`); otherwise per op, the listed kernel
libraries tried by the per-op hook (:mod:`.tiled`), with MetaSchedule tuning when asked
(:mod:`.tune`: records stored beside the library). Run: in this process on the TVM runtime
(:class:`robustq_deploy.runtime.TVMRunner`), or, for a description with an ``emulator``, through
the target's runner under it (:class:`robustq_deploy.runtime.EmulatedRunner`).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UnsupportedError
from ..manifest import commit_folder, sha256_file, stage_folder
from ..registry import Registry
from .backend import BACKENDS, Backend


def _tiled() -> str:
    from . import tiled

    return tiled.enable()


# kernel libraries a target may list in ``kernels``: name -> registers it, returns its name
KERNEL_LIBRARIES: Registry = Registry("kernel library", key="kernels")
KERNEL_LIBRARIES.add("tiled", _tiled)


class CpuBackend(Backend):
    kind = "cpu"

    def check(self, options) -> None:
        desc = options.target
        for name in options.libraries:
            KERNEL_LIBRARIES.get(name, key=f"target {desc.name}: kernels")
        if desc.cross_compiler and shutil.which(desc.cross_compiler) is None:  # before the long part
            from ..targets.toolchain import APT_HINT

            raise UnsupportedError(f"target {desc.name}: the cross compiler {desc.cross_compiler} is not installed; "
                                   f"install with: {APT_HINT}")
        if options.tune_trials and desc.emulated:
            raise UnsupportedError(f"target {desc.name}: tuning measures on this machine; only targets that run "
                                   "here can be tuned")
        desc.features()  # a description whose isa contradicts its TVM target is refused here

    def build(self, prepared, options, lib_path: Path) -> dict[str, Any]:
        from . import compile_model
        from .build import build, export_library
        from .fused import PER_OP_PATH, build_fused
        from .tiled import tir_pipeline, used

        libraries = [KERNEL_LIBRARIES.get(n)() for n in options.libraries]
        meta: dict[str, Any] = {}
        if libraries and not options.tune_trials:  # the whole graph as one fused kernel network when it matches
            fused, refused = build_fused(prepared, options, lib_path)
            if fused is not None:
                return {**fused, "kernel_libraries": libraries}
            meta["fused_refused"] = refused
        meta["compile_path"] = PER_OP_PATH
        database = self._tune(prepared, options, lib_path, meta) if options.tune_trials else None
        _, lowered, cmeta = compile_model(prepared, options, database)
        pipeline = tir_pipeline() if used(cmeta["implementations"]) else None
        export_library(build(lowered, options.target, tuned=database is not None, tir_pipeline=pipeline), lib_path,
                       options.target)
        return {**meta, **cmeta, "kernel_libraries": libraries}

    @staticmethod
    def _tune(prepared, options, lib_path: Path, meta: dict[str, Any]):
        """Tune the model's fused functions; the records are stored beside the library (and
        listed in ``meta``), and the build uses exactly those."""
        from . import compile_model
        from .tune import load_database, store_records, tune

        _, lowered, _ = compile_model(prepared, options)
        records = Path(lib_path).with_suffix(".tuning")
        staged = stage_folder(records)
        try:
            with tempfile.TemporaryDirectory() as work:
                tune(lowered, options.target, options.tune_trials, Path(work))
                names = store_records(Path(work), staged)
            database = load_database(staged)
            meta["tuning"] = {"trials": options.tune_trials, "records": [
                {"path": f"{records.name}/{n}", "sha256": sha256_file(staged / n)} for n in names]}
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        commit_folder(staged, records)
        return database

    def runner(self, artifact, desc, threads: int | None = None):
        from ..runtime import EmulatedRunner, TVMRunner

        if desc.emulated:
            return EmulatedRunner(artifact, desc, threads)
        return TVMRunner(artifact, desc, threads)


BACKENDS.add("cpu", CpuBackend())

__all__ = ["KERNEL_LIBRARIES", "CpuBackend"]
