"""bench/overhead.py end to end on the digits model (built by the bench itself, one batch size, two
runs): every engine at both thread counts, the ratios computed from the rows, the default-threads
row, and the runner bit-exact with the raw VM call."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_rows_of_the_digits_model(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "overhead.py"), "--models", "digits", "--batches", "1",
                           "--runs", "2", "--calls", "3", "--threads", "1,2", "--keep", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "TVM_NUM_THREADS": "2"})  # threads=2 even on a 1-core host
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["physical_cores"] >= 1 and len(rows[0]["loadavg_before"]) == 3
    assert len(rows[-1]["loadavg_after"]) == 3
    build = next(r for r in rows if r.get("check") == "build")
    assert build["model"] == "digits" and build["compile_path"] == "fused-network"
    assert next(r for r in rows if r.get("check") == "bit-exact load vs relax-vm")["ok"] is True
    timed = {(r["engine"], r["threads"]): r for r in rows if "engine" in r}
    engines = ("onnxruntime", "relax-vm", "relax-vm-tensor", "load")
    assert set(timed) >= {(e, t) for e in engines for t in (1, 2)}
    for r in timed.values():
        assert r["batch"] == 1 and r["runs"] == 2 and r["calls_per_run"] == 3
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
    for t in (1, 2):
        ratios = next(r for r in rows if r.get("check") == "ratios" and r["threads"] == t)
        load = timed["load", t]["median_ms"]
        assert ratios["load_over_relax_vm"] == pytest.approx(load / timed["relax-vm", t]["median_ms"], rel=1e-2)
        assert ratios["load_over_onnxruntime"] == pytest.approx(load / timed["onnxruntime", t]["median_ms"], rel=1e-2)
    row = next(r for r in rows if r.get("check") == "default threads vs threads=2")
    default = next(r for r in timed.values() if r["engine"] == "load-default")
    assert row["default_threads"] == default["threads"] == rows[0]["physical_cores"]
    assert row["default_over_threads2"] == pytest.approx(default["median_ms"] / timed["load", 2]["median_ms"], rel=1e-2)
