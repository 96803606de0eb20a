"""bench/train_cost.py: activation bits are part of what a row measures; a run replaces only the
rows of its own model and widths."""
import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load():
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("train_cost", REPO / "bench" / "train_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_act_bits_reach_the_config_and_key_the_rows(tmp_path, shared_data_dir):
    T = _load()
    assert T.config("qat", "mnist-small", 4, 64, 1, None, 4).quant.act_bits == 4
    assert T.config("qat", "mnist-small", 4, 64, 1, None).quant.act_bits == 8
    jsonl = tmp_path / "cost.jsonl"
    old = [{"arch": "mnist-small", "bits": 4, "method": "qat", "tag": "legacy, 8-bit activations"},
           {"arch": "mnist-small", "bits": 4, "act_bits": 4, "method": "qat", "tag": "replaced"},
           {"arch": "mnist-small", "bits": 8, "act_bits": 8, "method": "qat", "tag": "other width"}]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert T.main(["--bits", "4", "--act-bits", "4", "--methods", "qat,fgsm-rs", "--steps", "1", "--rounds", "2",
                   "--data-dir", str(shared_data_dir), "--jsonl", str(jsonl)]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r.get("tag") for r in rows[:2]] == ["legacy, 8-bit activations", "other width"]
    new = rows[2:]
    assert [(r["method"], r["bits"], r["act_bits"]) for r in new] == [("qat", 4, 4), ("fgsm-rs", 4, 4)]
    assert new[0]["ratio"] == 1.0 and new[1]["ms_per_step"] > 0
