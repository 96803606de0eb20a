"""bench/methods.py: the row plan (dependencies first), resuming, and the results page."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_methods", REPO / "bench" / "methods.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through it
    spec.loader.exec_module(mod)
    return mod


def test_plan_puts_references_and_the_lwq_teacher_first(bench):
    rows = bench.plan(["mnist"], [4], ["odgq", "lwq", "lwq-uniform"])
    assert rows == [("mnist", "natural", "float"), ("mnist", "fgsm-rs", "float"), ("mnist", "qat", 4),
                    ("mnist", "odgq", 4), ("mnist", "lwq", 4), ("mnist", "lwq-uniform", 4)]
    full = bench.plan(["mnist"], list(bench.ALL_BITS), list(bench.VARIANTS))
    assert ("mnist", "qat", "float") not in full and ("mnist", "natural", 8) not in full
    assert full.index(("mnist", "qat", "ternary")) < full.index(("mnist", "binary-relax", "ternary"))


def _row(method, bits, clean, robust, seconds, **extra):
    return {"preset": "quick", "dataset": "mnist", "method": method, "bits": bits, "eps": 0.3, "clean_acc": clean,
            "robust_acc": robust, "robust_acc_pgd": robust, "robust_n": 1000, "test_n": 10000, "square": True,
            "train_seconds": seconds, "natural_train_seconds": 100.0, "train_cpu_seconds": seconds,
            "natural_train_cpu_seconds": 100.0, "time_ratio": seconds / 100, "cpu_time_ratio": seconds / 100,
            "diagnostics": {"eps": 0.3, "n": 4, "layers": [{"layer": "conv1", "ratio": 1.0, "lipschitz": 2.0},
                                                             {"layer": "fc2", "ratio": 3.0, "lipschitz": 1.5}]},
            **extra}


def test_methods_page_tables_seeds_cost_and_masking(bench, tmp_path):
    lwq = {"bits_per_weight": 3.9, "layers": [{"layer": "conv1", "bits": 8, "clip": None}]}
    rows = [_row("natural", "float", 0.99, 0.0, 100), _row("qat", 8, 0.99, 0.0, 100),
            _row("pgd-at", 8, 0.98, 0.90, 1000), _row("odgq", 8, 0.98, 0.895, 150),
            _row("fgsm-rs", "float", 0.98, 0.85, 200), _row("fgsm-rs", 4, 0.97, 0.70, 200),
            _row("dq", 4, 0.97, 0.78, 210), _row("qat", 4, 0.98, 0.0, 100),
            _row("lwq", 4, 0.97, 0.80, 400, lwq=lwq), _row("lwq-uniform", 4, 0.97, 0.71, 400, lwq=lwq),
            _row("binary-relax", "float", 0.985, 0.5, 250), _row("binary-relax", "ternary", 0.98, 0.4, 250,
                                                                   channel_sparsity=0.125)]
    md = tmp_path / "methods.md"
    for r in rows:
        r["command"] = "python bench/methods.py --quick"
    text = bench.render(rows, md)
    assert "python bench/methods.py --quick" in text and "[`results.md`](results.md)" in text
    assert "| odgq | 8 | 98.0 | 89.5 | 89.5 | 150 | 100 | 1.50 |" in text
    assert "3.90 bits/weight (conv1:8)" in text and "channel sparsity 12.5%" in text
    assert "gradient masking suspected" not in text and "verdict" not in text  # claims live on results.md
    masked = bench.render(rows[:3] + [dict(rows[3], robust_acc_pgd=0.93)] + rows[4:], md)  # odgq: PGD 93, worst 89.5
    assert "Square breaks 3.5 points the white-box attacks left standing: gradient masking suspected" in masked
    assert (tmp_path / "results-amplification-quick-mnist.png").exists()
    cost = [{"arch": "mnist-cnn", "bits": 8, "method": m, "ms_per_step": ms, "p10_ms": ms, "p90_ms": ms,
             "ratio": ms / 20, "reference": "qat", "command": "python bench/train_cost.py"}
            for m, ms in (("qat", 20.0), ("odgq", 50.0), ("pgd-at", 220.0))]
    slow = bench.render(rows, md, cost)
    assert "| mnist-cnn | 8 / 8 | odgq | 50.0 |" in slow and "python bench/train_cost.py" in slow


def test_rows_file_resumes(bench, tmp_path):
    path = tmp_path / "rows.jsonl"
    bench.append_row(path, {"dataset": "mnist", "method": "qat", "bits": 8})
    bench.append_row(path, {"dataset": "mnist", "method": "odgq", "bits": 8})
    assert [(r["method"], r["bits"]) for r in bench.read_rows(path)] == [("qat", 8), ("odgq", 8)]
    assert json.loads(path.read_text().splitlines()[0])["method"] == "qat"


def test_seeds_are_tabled(bench, tmp_path):
    base = [_row("qat", 8, 0.99, 0.0, 100), _row("pgd-at", 8, 0.98, 0.85, 1000), _row("odgq", 8, 0.98, 0.89, 150)]
    seed1 = [dict(_row("odgq", 8, 0.97, 0.86, 150), seed=1), dict(_row("qat", 8, 0.99, 0.0, 100), seed=1)]
    md = tmp_path / "methods.md"
    assert "### Seeds" not in bench.render(base, md)
    both = bench.render(base + seed1, md)
    # the tables stay seed 0's; the seeds table has every seed and the spread
    assert "| odgq | 8 | 98.0 |" in both and "| odgq | 8 | 97.0 |" not in both
    assert "### Seeds" in both and "| mnist | odgq | 8 | 0, 1 | 98.0, 97.0 | 89.0, 86.0 | 87.5 | 2.1 |" in both

def test_seed_rows_go_to_their_own_file(bench):
    assert bench.seed_suffix(0) == "" and bench.seed_suffix(2) == "-seed2"
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", "--seed", "-1"])
    assert exc.value.code == 2
