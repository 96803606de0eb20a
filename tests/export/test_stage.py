"""The export stage: deterministic bytes, manifest metadata (model size per weight kind), CLI."""
from __future__ import annotations

import json

import onnx
import pytest

from robustq_deploy.config import ExportConfig
from robustq_deploy.export import export_model, export_stage, model_size
from robustq_deploy.manifest import Manifest, sha256_file

from ..helpers import run_cli
from .helpers import assert_bit_equal, run_ort, run_ref


@pytest.mark.parametrize("fmt", ["qdq", "integer", "qoperator", "packed"])
def test_export_is_deterministic(models, fmt):
    key = "int4" if fmt == "qdq" else "bnn" if fmt == "packed" else "int8"
    a = export_model(models[key], fmt, 21).SerializeToString(deterministic=True)
    b = export_model(models[key], fmt, 21).SerializeToString(deterministic=True)
    assert a == b


def test_stage_writes_the_same_file_twice_and_records_sizes(checkpoints, tmp_path, digits_data):
    arts = [export_stage(checkpoints["bnn"], ExportConfig(format="packed", opset=21), tmp_path / d) for d in "ab"]
    assert arts[0].sha256 == arts[1].sha256 == sha256_file(arts[0].file)
    assert arts[0].file.name == "model.packed.onnx"
    entry = Manifest.load(tmp_path / "a").find(arts[0].file)
    assert entry.parents[0]["kind"] == "checkpoint"
    meta = entry.meta
    assert meta["format"] == "packed" and meta["opset"] == 21
    assert meta["inputs"] == [{"name": "input", "shape": [None, 1, 8, 8], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "logits", "shape": [None, 10], "dtype": "float32"}]
    size = meta["size"]
    binary = size["by_kind"]["binary"]
    assert binary["layers"] == 3 and binary["weight_bytes"] * 28 <= binary["float_weight_bytes"]
    assert size["by_kind"]["int8"]["layers"] == 1
    m = onnx.load(arts[0].file)
    assert size["onnx_initializer_bytes"] == sum(len(i.raw_data) for i in m.graph.initializer)
    x = digits_data[0][:64]
    assert_bit_equal(run_ort(m, x), run_ref(m, x))
    json.dumps(meta)  # JSON-ready


def test_model_size_per_kind(models):
    s = {k: model_size(models[k]) for k in ("int8", "int4", "ternary", "bnn")}
    w = {k: s[k]["layers"] for k in s}
    n = [r["float_weight_bytes"] // 4 for r in w["int8"]]
    assert [r["weight_bytes"] for r in w["int8"]] == n
    assert [r["weight_bytes"] for r in w["int4"]] == [(v + 1) // 2 for v in n]
    m_k = [tuple(layer.weight.reshape(layer.weight.shape[0], -1).shape) for layer in
           (models["ternary"].conv1, models["ternary"].conv2, models["ternary"].fc1, models["ternary"].fc2)]
    assert [r["weight_bytes"] for r in w["ternary"]] == [2 * m * ((k + 7) // 8) for m, k in m_k]
    assert set(s["bnn"]["by_kind"]) == {"binary", "int8"}
    assert s["int8"]["float_bytes"] == sum(r["float_bytes"] for r in w["int8"])


def test_cli_export(checkpoints, tmp_path, capsys):
    code, out, err = run_cli(["export", checkpoints["int8"], "--format", "integer", "--out", tmp_path], capsys)
    assert code == 0 and out.startswith(f"onnx {tmp_path / 'model.integer.onnx'}")
    onnx.checker.check_model(onnx.load(tmp_path / "model.integer.onnx"), full_check=True)
