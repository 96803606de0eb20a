"""bench/foreign.py: the standard definitions it builds, and its rows end to end (onnxruntime's
quantize_static, ``robustq compile`` in a subprocess, the library against onnxruntime)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMING = ("onnxruntime_ms", "ours_ms", "ratio", "runs", "ours_p10_p90_ms", "onnxruntime_p10_p90_ms")


@pytest.fixture(scope="module")
def foreign():
    spec = importlib.util.spec_from_file_location("bench_foreign", REPO / "bench" / "foreign.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_standard_definitions(foreign):
    """Parameter counts of the reference implementations: ResNet-18 for CIFAR-10 (BasicBlocks,
    3x3 stem, 11,173,962) and torchvision's MobileNetV2 (3,504,872 with 1000 classes; its
    10-class head at 32x32: the strides change, not the parameters)."""
    def params(name, side, classes):
        return sum(p.numel() for p in foreign.build_model(name, side, classes).parameters())

    assert params("resnet18", 32, 10) == 11_173_962
    assert params("mobilenetv2", 224, 1000) == 3_504_872
    assert params("mobilenetv2", 32, 10) == 3_504_872 - 1281 * 1000 + 1281 * 10


def check_row(row: dict, fmt: str, batch: int, threads: int) -> None:
    assert row["format"] == fmt and row["batch"] == batch and row["threads"] == threads and row["target"] == "x86"
    assert row["compile_s"] > 0 and len(row["load_avg"]) == 3 and isinstance(row["compile_reused"], bool)
    if "error" in row:  # a refusal is one line naming the problem
        assert row["error"].startswith("error: ") and "\n" not in row["error"]
        assert not any(k in row for k in TIMING)
        return
    assert row["bit_exact"] == (row["max_abs_diff"] == 0.0)
    assert 0.0 <= row["argmax_equal"] <= 1.0
    assert row["onnxruntime_ms"] > 0 and row["ours_ms"] > 0 and row["runs"] >= 2
    assert row["ratio"] == pytest.approx(row["ours_ms"] / row["onnxruntime_ms"], rel=1e-2)
    path = row["compile_path"]
    assert path["graph"] in ("fused-network", "per-op")
    assert path["layers"] and all(v.startswith(("fused-network", "per-op")) for v in path["layers"].values())
    assert sum(path["layer_counts"].values()) == len(path["layers"])
    assert isinstance(path["per_layer_recorded"], bool) and isinstance(path["kernels"], dict)


def test_rows_of_a_small_model_end_to_end(foreign, tmp_path, capsys):
    """A small network of the bench's layer kinds (conv + BatchNorm + ReLU6, depthwise conv, global
    average pooling, linear) through the bench's own steps, both formats, two batch sizes."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                          nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10))
    files = foreign.quantize_files(model, "small", 8, 0, tmp_path, ["qdq", "qoperator"])
    args = foreign.parse_args(["--runs", "3", "--warmup", "1", "--batches", "1,3", "--threads", "1", "--pause-ms", "1",
                               "--reuse"])
    for fmt, path in files.items():
        foreign.bench_file(args, "small", 8, fmt, path, tmp_path)
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["format"], r["batch"]) for r in rows] == [("qdq", 1), ("qdq", 3), ("qoperator", 1), ("qoperator", 3)]
    for r in rows:
        check_row(r, r["format"], r["batch"], 1)
        assert r["compile_reused"] is False and r["pause_ms"] == 1
    qdq = rows[0]["compile_path"]
    assert set(qdq["layers"]) == {"/0/Conv", "/3/Conv", "/7/Gemm"}  # every conv / gemm of the file, by name
    for r in rows:  # what each layer was lowered to, from the artifact's own record, in both formats
        assert r["compile_path"]["per_layer_recorded"], r["compile_path"]
        kinds = sorted(r["compile_path"]["layers"].values())
        assert kinds[:2] == ["per-op integer: int_conv2d_requant:tiled"] * 2, kinds
        assert kinds[2].startswith("per-op integer: int_matmul"), kinds

    # --reuse: the same file's build is timed again, with the compile seconds of its build
    foreign.bench_file(args, "small", 8, "qdq", files["qdq"], tmp_path)
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["compile_reused"] for r in again] == [True, True]
    assert [r["compile_s"] for r in again] == [r["compile_s"] for r in rows[:2]]
    assert [r["compile_path"] for r in again] == [r["compile_path"] for r in rows[:2]]

    # a build made by other compiler code is compiled anew, not timed again
    records = list(tmp_path.rglob(foreign.COMPILE_RECORD))
    assert records
    for rec in records:
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "compiler_source": "older code"}))
    foreign.bench_file(args, "small", 8, "qdq", files["qdq"], tmp_path)
    assert [json.loads(line)["compile_reused"] for line in capsys.readouterr().out.splitlines()] == [False, False]


@pytest.mark.slow
def test_smallest_case_of_the_bench(tmp_path):
    """The bench's smallest case as a user runs it (MobileNetV2 at 32x32, QDQ, batch 1): several
    minutes of ``robustq compile`` on two cores."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "foreign.py"), "--models", "mobilenetv2", "--sizes",
                           "32", "--formats", "qdq", "--batches", "1", "--runs", "3", "--threads", "1", "--work",
                           str(tmp_path)], check=False, capture_output=True, text=True, env=env,
                          timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["model"] == "mobilenetv2" and rows[0]["input"] == [3, 32, 32]
    check_row(rows[0], "qdq", 1, 1)
