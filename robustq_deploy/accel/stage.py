"""``robustq compile --target fpga-sim[:PRESET or FILE]``: the artifacts of the accelerator target.

:func:`build_accel` is what the ``accel`` backend (:mod:`.backend`) builds for a target of that
kind. It compiles the prepared model through the normal compile path with the partitioner
(:mod:`.partition`) and the canonical layer forms (:mod:`.canonical`) hooked in, then writes::

    DIR/model.fpga-sim.so                    host TVM library (the manifest's compiled artifact)
    DIR/model.fpga-sim.accel/src/            HLS-style C per offloaded layer, host driver, TVM glue
    DIR/model.fpga-sim.accel/libfpga_sim.so  the simulation library built from src/ (:mod:`.simlib`)
    DIR/model.fpga-sim.accel/cost.json       the cost report (:mod:`.cost`); cost.html its table

Every file of the ``.accel`` folder is listed with its sha256 in the compiled artifact's
``meta.accel.files``; the runner checks them before loading anything (:mod:`.runner`). The
folder is built aside and swapped in whole, so a failed compile leaves the previous one intact.
Same model and accelerator description give the same bytes.

:func:`estimate_cost` stops after the partition: the same cost report, with nothing built.
Before any of it, :class:`.backend.AccelBackend` checks what can be refused up front (tuning,
a bad accelerator description, no C compiler).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from ..errors import ConfigError, UnsupportedError
from ..manifest import commit_folder, dumps_json, stage_folder
from . import codegen, driver
from .cost import cost_report, cost_table_html
from .desc import load_accel
from .partition import onnx_layer_names, partition
from .schedule import plan
from .simlib import CFLAGS, build_library, compiler_version

KIND = "accel"  # the target kind this package's backend serves
SIM_LIBRARY = "libfpga_sim.so"
COST_FILE = "cost.json"


def accel_dir(lib_path: str | Path) -> Path:
    p = Path(lib_path)
    return p.with_name(p.name[: -len(p.suffix)] + ".accel" if p.suffix else p.name + ".accel")


def all_sources(layers, schedules) -> dict[str, str]:
    files = {"fpga_hls.h": codegen.HLS_HEADER, **driver.sources(layers, schedules)}
    for spec, sched in zip(layers, schedules):
        files.update(codegen.layer_sources(spec, sched))
    return dict(sorted(files.items()))


def _write_tree(dest: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (relative path -> bytes) as folder ``dest``, replacing it whole (with the
    stage's publication when there is one, :func:`robustq_deploy.manifest.commit_folder`)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = stage_folder(dest)
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_folder(tmp, dest)


def _partitioned(prepared, options):
    """Import the prepared model for the accelerator target ``options.target`` and partition it:
    the accelerator description, the partition, the schedules, the cost report, the lowered host
    module and the compile metadata. Nothing is built yet."""
    from ..compile import compile_model
    from . import canonical

    accel = load_accel(options.target.accel)
    found = {}

    def offload(mod, prep):
        found["p"] = partition(mod, accel, onnx_layer_names(prep.graph))
        return found["p"].mod

    _, lowered, meta = compile_model(prepared, replace(options, kernels=(canonical.NAME,)), partition=offload)
    part = found["p"]
    schedules = plan(part.layers, accel)
    report = cost_report(part.layers, schedules, [h.as_dict() for h in part.host], accel, part.order)
    return accel, part, schedules, report, lowered, meta


def estimate_cost(model: onnx.ModelProto, target: str = "fpga-sim", requant: str = "auto") -> dict[str, Any]:
    """The cost report :func:`build_accel` would store for ``model`` on ``target``
    (``fpga-sim[:PRESET or FILE]``), without building the host library or the C: what a user
    reads to see whether a model fits an accelerator before compiling it."""
    from ..compile import CompileOptions, prepare
    from ..targets import get_target

    desc = get_target(target)
    if desc.kind != KIND:
        raise ConfigError(f"target {target!r} is not an accelerator target (kind {desc.kind!r}, not {KIND!r})")
    options = CompileOptions.of(desc, requant=requant)
    return _partitioned(prepare(model, options.requant), options)[3]


def build_accel(prepared, options, lib_path: str | Path) -> dict[str, Any]:
    """Build the prepared model for the accelerator target ``options.target``; returns the
    compile metadata."""
    from ..compile.build import build, export_library

    desc = options.target
    accel, part, schedules, report, lowered, meta = _partitioned(prepared, options)
    if not part.layers:
        why = "; ".join(f"{h.name}: {', '.join(h.reasons)}" for h in part.host[:3])
        raise UnsupportedError(f"target {desc.name}: no layer of this model can run on the accelerator ({why or 'no layers'})"
                               "; quantize the model, or compile it for x86")
    sources = all_sources(part.layers, schedules)
    files = {f"src/{n}": t.encode() for n, t in sources.items()}
    lib_path = Path(lib_path)
    folder = accel_dir(lib_path)
    with tempfile.TemporaryDirectory(prefix="robustq-fpga-lib-") as tmp:
        build_library(sources, Path(tmp) / SIM_LIBRARY)
        files[SIM_LIBRARY] = (Path(tmp) / SIM_LIBRARY).read_bytes()
    files[COST_FILE] = dumps_json(report).encode()
    files["cost.html"] = (f"<!doctype html>\n<meta charset=\"utf-8\">\n<title>{accel.name}: accelerator cost"
                          f"</title>\n{cost_table_html(report)}\n").encode()
    export_library(build(lowered, desc), lib_path, desc)
    _write_tree(folder, files)
    base = lib_path.parent
    rel = os.path.relpath(folder, base)
    listed = [{"path": f"{rel}/{n}", "sha256": hashlib.sha256(files[n]).hexdigest()} for n in sorted(files)]
    meta["accel"] = {
        "preset": desc.accel, "accelerator": accel.as_dict(), "dir": rel, "files": listed,
        "sim_library": f"{rel}/{SIM_LIBRARY}", "cost_file": f"{rel}/{COST_FILE}",
        "build": {"compiler": compiler_version(), "cflags": list(CFLAGS)},
        "offloaded": [s.name for s in part.layers], "host_layers": [h.as_dict() for h in part.host],
        "cost": report,
    }
    return meta


__all__ = ["COST_FILE", "KIND", "SIM_LIBRARY", "accel_dir", "all_sources", "build_accel", "estimate_cost"]
