"""The verify stage end to end on a PGD-AT int8 digits model: onnxruntime and TVM x86 attacked,
per-attack and worst-case robust accuracy, validity checks, reports and manifest."""
import base64
import json
from xml.etree import ElementTree as ET

from robustq_deploy.manifest import Manifest
from robustq_deploy.verify.state import STATE_NAME


def _report(report_dir):
    return json.loads((report_dir / "report.json").read_text())


def test_every_model_gets_per_attack_and_worst_case_accuracy(report_dir):
    r = _report(report_dir)
    assert r["deployed"] == ["onnxruntime", "tvm-x86"] and r["missing_engines"] == {}
    assert set(r["models"]) == {"float", "twin", "onnx-twin", "onnxruntime", "tvm-x86"}
    assert r["white_box_twin"] == "twin" and r["model"]["source"].startswith("trained by robustq")
    assert [a["name"] for a in r["attacks"]] == ["pgd", "apgd-ce", "transfer", "square"]
    for name in ("twin", "onnx-twin", "onnxruntime", "tvm-x86"):
        m = r["models"][name]
        seq = [m["clean_acc"]] + [m["robust_acc"][a] for a in ("pgd", "apgd-ce", "transfer", "square")]
        assert all(a >= b for a, b in zip(seq, seq[1:])), (name, seq)  # each attack only removes points
        assert m["robust_acc"]["worst_case"] == seq[-1]
        assert m["clean_acc"] > 0.8 and m["robust_acc"]["worst_case"] < m["clean_acc"]
        assert abs(sum(m["broken"].values()) - (m["clean_acc"] - m["robust_acc"]["worst_case"])) < 1e-9
    assert "square" not in r["models"]["float"]["robust_acc"]  # the float model is not deployed
    assert r["queries"]["square"]["onnxruntime"] > 0


def test_validity_checks_pass_on_a_pgd_at_model(report_dir):
    r = _report(report_dir)
    statuses = {v["name"]: v["status"] for v in r["validity"]}
    assert r["flags"] == [], r["flags"]
    for name in ("gradient_masking.onnxruntime", "gradient_masking.tvm-x86", "eps1.onnxruntime", "eps1.tvm-x86",
                 "zero_gradients", "agreement.clean.tvm-x86", "agreement.adversarial.onnxruntime",
                 "determinism.tvm-x86", "probability_outputs.twin"):
        assert statuses[name] == "pass"
    for eng in r["deployed"]:
        assert r["agreement"][eng]["clean"] >= 0.99


def test_sweep_and_amplification(report_dir):
    r = _report(report_dir)
    assert [row["eps"] for row in r["eps_sweep"]] == [0.05, 0.2]
    for name in ("float", "twin", "onnxruntime", "tvm-x86"):
        assert r["eps_sweep"][0][name] >= r["eps_sweep"][1][name]
    amp = r["amplification"]
    assert amp["layers"] == ["conv1", "conv2", "fc1", "fc2"]
    for model in ("twin", "float"):
        assert all(v > 0 for v in amp[model]["adversarial"] + amp[model]["random"])


def test_outputs_html_junit_manifest(report_dir, deployed):
    html = (report_dir / "report.html").read_text()
    images = html.split("data:image/png;base64,")[1:]
    assert len(images) == 3 + 3 * sum(len(rows) for rows in _report(report_dir)["examples"].values())
    for img in images:
        assert base64.b64decode(img.split("'")[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in html.replace("http-equiv", "")  # no external assets
    suite = ET.parse(report_dir / "report.junit.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) == len(_report(report_dir)["validity"]) and suite.get("failures") == "0"
    assert "worst case" in (report_dir / "summary.txt").read_text()
    assert not (report_dir / STATE_NAME).exists()
    art = Manifest.load(report_dir).find(report_dir / "report.json")
    lib = Manifest.load(deployed).find(deployed / "model.x86.so")
    assert art.kind == "report" and lib.sha256 in {p["sha256"] for p in art.parents}


def test_twin_and_engines_lie_within_the_rounding_bound_of_the_qdq_graph(deployed):
    """What lets verify call a twin/engine disagreement a near-tie: the twin (PyTorch fake-quant)
    and the deployed module both lie within the rounding-deviation bound of the QDQ reference."""
    import numpy as np
    import torch

    from robustq_deploy.data import load_dataset
    from robustq_deploy.runtime import load
    from robustq_deploy.checkpoint import read_checkpoint
    from robustq_deploy.verify.robustness import rounding_reference
    from tests.helpers import assert_within_rounding

    twin, _ = read_checkpoint(deployed / "model.safetensors")
    reference = rounding_reference(twin.eval())
    assert reference is not None
    x = load_dataset("digits", "test").as_float().astype(np.float32)[:200]
    with torch.no_grad():
        assert_within_rounding(twin(torch.from_numpy(x)).numpy(), reference, x)
    assert_within_rounding(load(deployed / "model.x86.so")(x), reference, x)


def test_both_twins_a_checkpoint_surrogate_and_the_onnx_twin_as_white_box(deployed, tmp_path):
    """With a checkpoint both twins are scored; ``twin = onnx`` makes the ONNX twin the white-box
    one, and a checkpoint named as surrogate is where transfer attacks craft."""
    from robustq_deploy.verify import verify_stage

    from .conftest import verify_config

    cfg = verify_config(attacks=["apgd-ce", "transfer"], twin="onnx", surrogate=str(deployed / "model.safetensors"),
                        eps_sweep=[], limit=48, float_model=False, amplification=False,
                        attack_params={"apgd-ce": {"steps": 5}, "transfer": {"steps": 5}})
    verify_stage(deployed / "model.qdq.onnx", cfg, tmp_path, progress=False)
    r = _report(tmp_path)
    assert r["white_box_twin"] == "onnx-twin" and {"twin", "onnx-twin"} <= set(r["models"])
    assert {a["name"]: a["crafted_on"] for a in r["attacks"]} == {"apgd-ce": "onnx-twin", "transfer": "surrogate"}
    assert r["model"]["surrogate"]["kind"] == "checkpoint"
