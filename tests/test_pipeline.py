"""End to end: train -> export -> compile -> verify -> check on digits, through the CLI."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import robustq_deploy
from robustq_deploy.manifest import Manifest

from .helpers import assert_within_rounding, run_cli

EPOCHS = 6


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context():
        from robustq_deploy.cli import apply_overrides
        from robustq_deploy.pipeline import demo_config, run_pipeline
        # the demo's standard attack budget costs minutes; the mechanics are the same with the fast one
        cfg = apply_overrides(demo_config(), (f"train.epochs={EPOCHS}", "train.eps_warmup_epochs=2",
                                              'verify.budget="fast"', "verify.attack_params={square={queries=300}}"))
        run_pipeline(cfg, out, progress=False, log=lambda m: None)
    return out


def test_manifest_lists_every_stage_with_lineage(demo_dir):
    arts = {a.kind: a for a in Manifest.load(demo_dir).artifacts}
    assert set(arts) == {"checkpoint", "onnx", "compiled", "report"}
    assert arts["onnx"].parents[0]["sha256"] == arts["checkpoint"].sha256
    assert arts["compiled"].parents[0]["sha256"] == arts["onnx"].sha256
    for a in arts.values():
        assert {"torch", "onnx", "onnxruntime", "apache-tvm"} <= set(a.tools)
    assert arts["checkpoint"].config["train"]["epochs"] == EPOCHS


def test_report_twin_and_deployed_agree(demo_dir):
    report = json.loads((demo_dir / "report.json").read_text())
    assert report["deployed"] == ["onnxruntime", "tvm-x86"]
    assert report["n"] == 360
    twin = report["models"]["twin"]
    assert twin["clean_acc"] > 0.8  # six epochs of PGD-AT on digits
    for eng in report["deployed"]:
        assert report["agreement"][eng]["clean"] >= 0.99
        assert report["agreement"][eng]["adversarial"] >= 0.99
        assert abs(report["models"][eng]["clean_acc"] - twin["clean_acc"]) <= 0.01
    assert twin["robust_acc"]["worst_case"] < twin["clean_acc"]  # the attack does something
    assert report["size"]["float_bytes"] > 3.5 * report["size"]["quantized_bytes"]


def test_deployed_runners_match_each_other(demo_dir):
    x = np.random.default_rng(0).random((7, 1, 8, 8), dtype=np.float32)
    ort = robustq_deploy.load(demo_dir / "model.qdq.onnx")
    tvm = robustq_deploy.load(demo_dir / "model.x86.so")
    assert ort.input_names == tvm.input_names == ["input"]
    for engine in (ort, tvm):  # onnxruntime rescales in float, the library in fixed point
        assert_within_rounding(engine(x), demo_dir / "model.qdq.onnx", x)


def test_check_pass_fail_and_junit(demo_dir, capsys, tmp_path):
    code, out, _ = run_cli(["check", demo_dir / "report.json", "--min-clean", "0.5", "--out", tmp_path], capsys)
    assert code == 0 and "PASS" in out
    code, out, _ = run_cli(["check", demo_dir / "report.json", "--min-robust", "0.999", "--out", tmp_path], capsys)
    assert code == 1 and "FAIL" in out
    junit = (tmp_path / "check.junit.xml").read_text()
    assert "<failure" in junit and 'tests="2"' in junit


def test_tampered_library_is_refused(demo_dir, tmp_path, capsys):
    copy = tmp_path / "d"
    shutil.copytree(demo_dir, copy)
    lib = copy / "model.x86.so"
    lib.write_bytes(lib.read_bytes() + b"\0")
    code, _, err = run_cli(["verify", lib, "--out", tmp_path / "v"], capsys)
    assert code == 2 and "does not match the manifest" in err
    assert not (tmp_path / "v").exists()


def test_infer_roundtrip_and_wrong_shape(demo_dir, tmp_path, capsys):
    x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, _ = run_cli(["infer", demo_dir / "model.x86.so", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"], capsys)
    assert code == 0
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, robustq_deploy.load(demo_dir / "model.x86.so")(x))
    np.save(tmp_path / "bad.npy", np.zeros((3, 1, 9, 9), np.float32))
    code, _, err = run_cli(["infer", demo_dir / "model.x86.so", "--input", tmp_path / "bad.npy", "--output", tmp_path / "z.npy"], capsys)
    assert code == 2 and "shape [3, 1, 9, 9]" in err and err.count("\n") == 1
    assert not (tmp_path / "z.npy").exists()


def test_same_seed_same_bytes(demo_dir, tmp_path):
    from robustq_deploy.compile import compile_stage
    from robustq_deploy.config import CompileConfig, ExportConfig
    from robustq_deploy.export import export_stage

    onnx_art = export_stage(demo_dir / "model.safetensors", ExportConfig(), tmp_path)
    assert onnx_art.sha256 == Manifest.load(demo_dir).find(demo_dir / "model.qdq.onnx").sha256
    lib = compile_stage(onnx_art.file, CompileConfig(), tmp_path)
    assert lib.sha256 == Manifest.load(demo_dir).find(demo_dir / "model.x86.so").sha256


def test_training_is_deterministic(tmp_path):
    from robustq_deploy.config import replace
    from robustq_deploy.pipeline import demo_config
    from robustq_deploy.train import train_stage

    cfg = replace(demo_config(), **{"train.epochs": 1})
    a = train_stage(cfg, tmp_path / "a", progress=False)
    b = train_stage(cfg, tmp_path / "b", progress=False)
    assert a.sha256 == b.sha256


@pytest.mark.slow
def test_full_demo_reaches_95_percent(tmp_path, capsys):
    code, out, _ = run_cli(["-q", "demo", "--out", tmp_path], capsys)
    assert code == 0, out
    report = json.loads((tmp_path / "report.json").read_text())
    for eng in report["deployed"]:
        assert report["models"][eng]["clean_acc"] >= 0.95
