"""Tile records: the register tile chosen for each kernel shape on each CPU.

The kernels' schedules are fixed by hand; what varies per layer is the register tile
(:class:`robustq_deploy.kernels.schedule.Tile`). :func:`tune_tile` measures the candidate tiles of
one kernel on this machine and keeps the fastest; the results are stored as JSON records, one
per (kernel family, spec, LLVM ``mcpu``). A target description names a folder of record files
(``tile_records``; the shipped ones are in ``targets/records/``, written by
``bench/tile_records.py`` for the project's example models) and the compile stage builds with
the tiles recorded for its CPU. A shape without a record gets the schedule's default tile.
Records are plain data: a stale or foreign record can only change speed, never results (every
tile computes the same integers).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .schedule import Tile


def spec_key(spec) -> str:
    """Stable text key of a kernel spec (frozen dataclasses of plain values): its repr with the
    fields left at their defaults omitted, so a field added to a spec later (with a default that
    keeps the old behaviour) does not orphan the records written before it."""
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        parts = []
        for f in dataclasses.fields(spec):
            value = getattr(spec, f.name)
            default = (f.default if f.default is not dataclasses.MISSING else f.default_factory()
                       if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
            if default is dataclasses.MISSING or value != default:
                parts.append(f"{f.name}={spec_key(value)}")
        return f"{type(spec).__name__}({', '.join(parts)})"
    if isinstance(spec, tuple):
        return "(" + ", ".join(spec_key(v) for v in spec) + ("," if len(spec) == 1 else "") + ")"
    return repr(spec)


def target_cpu(target) -> str:
    return str(target.attrs.get("mcpu", "")) or str(target.attrs.get("mtriple", "")) or "generic"


@dataclass
class Records:
    entries: dict[tuple[str, str, str], Tile] = field(default_factory=dict)

    @classmethod
    def load(cls, *paths) -> "Records":
        """Records from JSON files (paths or ``importlib.resources`` files; missing files are
        skipped: records only change speed)."""
        rec = cls()
        for p in paths:
            p = Path(p) if isinstance(p, str) else p
            if not p.is_file():
                continue
            for e in json.loads(p.read_text())["records"]:
                rec.entries[(e["kernel"], e["spec"], e["cpu"])] = Tile(*e["tile"])
        return rec

    def tile(self, kernel: str, spec, target) -> Tile | None:
        return self.entries.get((kernel, spec_key(spec), target_cpu(target)))

    def add(self, kernel: str, spec, target, tile: Tile) -> None:
        self.entries[(kernel, spec_key(spec), target_cpu(target))] = tile

    def to_json(self) -> str:
        rows = [{"kernel": k, "spec": s, "cpu": c, "tile": [t.pixels, t.oc_blocks, t.rows]}
                for (k, s, c), t in sorted(self.entries.items())]
        return json.dumps({"version": 1, "records": rows}, indent=1, sort_keys=True) + "\n"


def random_args(func, batch: int, rng: np.random.Generator) -> list:
    """Random operands for every buffer of a kernel PrimFunc (symbolic dims = ``batch``)."""
    import tvm

    args = []
    for p in func.params:
        shape = [int(d) if isinstance(d, (int, tvm.tirx.IntImm)) else batch for d in p.shape]
        dt = str(p.dtype)
        if dt.startswith("float"):
            a = rng.random(shape, dtype=np.float32).astype(dt)
        else:
            info = np.iinfo(dt)
            a = rng.integers(max(info.min, -100), min(info.max, 100) + 1, shape).astype(dt)
        args.append(tvm.runtime.tensor(a))
    return args


def tune_tile(kernel: str, spec, ctx, target, batch: int = 16, rounds: int = 40) -> tuple[Tile | None, dict]:
    """Fastest candidate tile of one kernel on this machine. Candidates are timed interleaved,
    round after round, and each keeps its best single call: on a shared machine the minimum
    over many interleaved calls is the least disturbed estimate. Returns (tile, timings)."""
    import tvm

    from .registry import KERNELS

    fam = KERNELS[kernel]
    cands = fam.candidates(spec, ctx)
    if len(cands) < 2:
        return None, {}
    rng = np.random.default_rng(0)
    calls = {}
    for tile in cands:
        func = fam.build(spec, ctx, tile)
        fn = tvm.tirx.build(tvm.IRModule({"main": func}), target=target)["main"]
        args = random_args(func, batch, rng)
        fn(*args)
        calls[tile] = (fn, args)
    timings = {tile: float("inf") for tile in cands}
    for _ in range(rounds):
        for tile, (fn, args) in calls.items():
            for _ in range(2):
                t0 = time.perf_counter()
                fn(*args)
                timings[tile] = min(timings[tile], time.perf_counter() - t0)
    return min(timings, key=timings.get), timings


def tune_network(net, target, records: "Records | None" = None, batch: int = 16, progress=None) -> "Records":
    """Tune every kernel of a network (see :func:`tune_tile`) into ``records``."""
    records = records or Records()
    for node in net.nodes:
        tile, timings = tune_tile(node.kernel, node.spec, net.ctx, target, batch)
        if tile is not None:
            records.add(node.kernel, node.spec, target, tile)
            if progress:
                progress(f"{node.name}: {tile} ({min(timings.values()) * 1e6:.1f} us at batch {batch}, "
                         f"{len(timings)} candidates)")
    return records
