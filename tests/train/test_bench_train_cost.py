"""bench/train_cost.py: methods stepped side by side, rows written with their ratio to natural training."""
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_side_by_side_rows(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_train_cost", REPO / "bench" / "train_cost.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    out = tmp_path / "cost.jsonl"
    out.write_text(json.dumps({"arch": "mnist-cnn", "bits": 8, "method": "qat"}) + "\n")  # another model's row stays
    assert mod.main(["--methods", "odgq,pgd-at", "--steps", "2", "--rounds", "1", "--jsonl", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["arch"], r["method"]) for r in rows] == [("mnist-cnn", "qat"), ("mnist-small", "qat"),
                                                        ("mnist-small", "odgq"), ("mnist-small", "pgd-at")]
    qat, odgq, pgd = rows[1:]
    assert qat["ratio"] == 1.0 and qat["reference"] == "qat"
    # PGD-10 takes ten attack passes per step: far more than one training pass, whatever the load
    assert pgd["ms_per_step"] > 3 * qat["ms_per_step"]
    assert abs(odgq["ratio"] - odgq["ms_per_step"] / qat["ms_per_step"]) < 0.02
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
