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


def test_act_bits_reach_the_config_and_key_the_rows(tmp_path):
    """Activation bits are part of what a row measures: a 4/4 run replaces only 4/4 rows (a row
    written before the field existed had 8-bit activations)."""
    spec = importlib.util.spec_from_file_location("bench_train_cost", REPO / "bench" / "train_cost.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    assert mod.config("qat", "mnist-small", 4, 64, 1, None, 4).quant.act_bits == 4
    assert mod.config("qat", "mnist-small", 4, 64, 1, None).quant.act_bits == 8
    out = tmp_path / "cost.jsonl"
    old = [{"arch": "mnist-small", "bits": 4, "method": "qat", "tag": "legacy, 8-bit activations"},
           {"arch": "mnist-small", "bits": 4, "act_bits": 4, "method": "qat", "tag": "replaced"},
           {"arch": "mnist-small", "bits": 8, "act_bits": 8, "method": "qat", "tag": "other width"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert mod.main(["--bits", "4", "--act-bits", "4", "--methods", "qat,fgsm-rs", "--steps", "1", "--rounds", "2",
                     "--jsonl", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r.get("tag") for r in rows[:2]] == ["legacy, 8-bit activations", "other width"]
    assert [(r["method"], r["bits"], r["act_bits"]) for r in rows[2:]] == [("qat", 4, 4), ("fgsm-rs", 4, 4)]
