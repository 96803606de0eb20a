"""MetaSchedule tuning of a lowered model; the records travel with the compiled artifact.

:func:`tune` runs ``trials`` MetaSchedule trials over the model's fused TIR functions on this
machine (builder workers get ``timeout_sec >= 120``: they start slowly) and returns the JSON
database. The compile stage stores the database's two files in ``DIR/<library>.tuning/`` and
lists them in the manifest entry, so a build can be reproduced (and re-tuned) later.

Tuning needs psutil, cloudpickle and xgboost, and measures on the build machine, so it only
makes sense for a native target. It takes minutes; it never runs in CI.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UnsupportedError

BUILDER_TIMEOUT_S = 120


def tuning_target(desc):
    """The target MetaSchedule tunes for and the tuned build uses: the description's, plus the
    physical core count MetaSchedule requires (``num-cores``)."""
    import psutil
    import tvm

    return tvm.target.Target({**desc.tvm_spec(), "num-cores": psutil.cpu_count(logical=False) or 1})
RECORD_FILES = ("database_workload.json", "database_tuning_record.json")


def tune(lowered, desc, trials: int, work_dir: Path):
    """Tune the fused TIR functions of ``lowered`` (:func:`.build.lower`'s output) for ``desc``;
    returns the database, which :func:`.build.lower` then applies."""
    if desc.emulated:
        raise UnsupportedError(f"target {desc.name}: tuning measures on this machine; only targets that run here "
                               "can be tuned")
    try:
        import cloudpickle  # noqa: F401
        import psutil  # noqa: F401
        import xgboost  # noqa: F401
    except ImportError as exc:
        raise UnsupportedError(f"tuning needs psutil, cloudpickle and xgboost ({exc.name} is missing)") from None
    from tvm.s_tir import meta_schedule as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    return ms.relax_integration.tune_relax(
        lowered, {}, tuning_target(desc), str(work_dir), max_trials_global=trials,
        builder=ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S), seed=0)


def store_records(work_dir: Path, dest: Path) -> list[str]:
    """Copy the database files next to the artifact; returns their names."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for name in RECORD_FILES:
        src = work_dir / name
        if src.exists():
            shutil.copyfile(src, dest / name)
            names.append(name)
    return names


def load_database(records_dir: Path):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(str(records_dir / RECORD_FILES[0]), str(records_dir / RECORD_FILES[1]),
                                    allow_missing=False)


__all__ = ["BUILDER_TIMEOUT_S", "load_database", "store_records", "tune", "tuning_target"]
