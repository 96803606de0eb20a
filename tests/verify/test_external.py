"""A model this tool did not train: a CNN trained in plain PyTorch and quantized by onnxruntime
(``quantize_static``, QDQ and QOperator), verified as an ONNX file, as the x86 library compiled
from it and as the aarch64 library under qemu. White-box attacks differentiate the ONNX twin,
transfer attacks craft on the float model (``--surrogate``), Square queries each engine. The
twin's logits equal the deployed modules' on the test points (onnxruntime's arithmetic is these
graphs' semantics; the compiler reproduces it bit for bit), and PGD through the twin breaks the
same points as torchattacks' PGD through the same twin."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from robustq_deploy.attacks import ThreatModel, pgd
from robustq_deploy.config import VerifyConfig, from_dict
from robustq_deploy.runtime import load
from robustq_deploy.twin import graph_twin
from robustq_deploy.verify import verify_stage
from tests.compile import ort_models as ortq
from tests.compile.conftest import mnist_x  # noqa: F401  (shared session fixture)
from tests.compile.helpers import compile_artifact, require_qemu
from tests.helpers import run_cli

KINDS = ("qdq", "qoperator")


def _cfg(surrogate, **over) -> VerifyConfig:
    return from_dict(VerifyConfig, {
        "dataset": "mnist", "limit": 48, "batch_size": 48, "eps": 0.1, "threads": 1, "surrogate": str(surrogate),
        "attacks": ["apgd-ce", "transfer", "square"], "engines": ["onnxruntime", "tvm"],
        "attack_params": {"apgd-ce": {"steps": 10}, "transfer": {"steps": 10}, "square": {"queries": 50}},
        "validity": {"points": 24}, **over})


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """Per kind: a folder with the onnxruntime-quantized model (no manifest of its own making) and
    the x86 library robustq compiled from it; plus the float model. The float CNN is trained in
    plain PyTorch for one epoch on 6000 MNIST images (:mod:`tests.compile.ort_models`)."""
    root = tmp_path_factory.mktemp("external")
    (root / "train").mkdir()
    quantized = ortq.quantize_all(ortq.train_float_cnn(root / "train", n_train=6000), root / "train", n_calib=100)
    out = {"float": shutil.copy(root / "train" / "float.onnx", root / "float.onnx")}
    for kind in KINDS:
        d = root / kind
        d.mkdir()
        out[kind] = shutil.copy(quantized[kind], d / f"{kind}.onnx")
        compile_artifact(out[kind], "x86", d)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_verify_the_onnx_file_and_its_x86_library(external, kind, tmp_path):
    onnx_path = external[kind]
    report_paths = {}
    for name, artifact in (("onnx", onnx_path), ("x86", onnx_path.parent / "model.x86.so")):
        verify_stage(artifact, _cfg(external["float"]), tmp_path / name, progress=False)
        report_paths[name] = tmp_path / name / "report.json"
    for name, path in report_paths.items():
        r = json.loads(path.read_text())
        assert r["deployed"] == ["onnxruntime", "tvm-x86"] and r["missing_engines"] == {}
        assert r["white_box_twin"] == "onnx-twin" and r["checkpoint"] is None
        assert r["model"]["source"].startswith("not trained by robustq") and r["model"]["onnx"]["external"]
        assert {a["name"]: a["crafted_on"] for a in r["attacks"]} == {"apgd-ce": "onnx-twin", "transfer": "surrogate",
                                                                      "square": None}
        assert all(r["queries"]["square"][e] > 0 for e in r["deployed"])
        for eng in r["deployed"]:  # the twin computes what the engines compute
            assert r["agreement"][eng] == {"clean": 1.0, "adversarial": 1.0, "clean_near_ties": 0,
                                           "adversarial_near_ties": 0}
            assert r["models"][eng]["clean_acc"] == r["models"]["onnx-twin"]["clean_acc"] > 0.6
            assert r["models"][eng]["robust_acc"]["worst_case"] < r["models"][eng]["clean_acc"]
        assert r["flags"] == [], r["flags"]
        assert r["model"]["onnx"]["bits"]["weights"] == ["int8"]


@pytest.mark.parametrize("kind", KINDS)
def test_twin_logits_equal_the_deployed_modules(external, mnist_x, kind):  # noqa: F811
    x = mnist_x[:200]
    twin = graph_twin(external[kind])
    with torch.no_grad():
        got = twin(torch.from_numpy(x)).numpy()
    for artifact in (external[kind], external[kind].parent / "model.x86.so"):
        assert np.array_equal(got, load(artifact)(x)), artifact


def test_pgd_through_the_twin_matches_torchattacks(external, mnist_x):  # noqa: F811
    """The same attack (PGD-20, step 2.5 eps / 20, no random start) by this tool and by torchattacks
    on the same twin: robust accuracy on the uint8 grid within one point."""
    torchattacks = pytest.importorskip("torchattacks")
    from robustq_deploy.data import load_dataset

    twin = graph_twin(external["qoperator"])
    y = torch.from_numpy(load_dataset("mnist", "test").labels[:200].astype(np.int64))
    x = torch.from_numpy(mnist_x[:200])
    threat = ThreatModel("linf", 0.1)
    ours = pgd(twin, x, y, threat, steps=20, random_start=False)
    theirs = torchattacks.PGD(twin, eps=0.1, alpha=2.5 * 0.1 / 20, steps=20, random_start=False)(x, y)
    with torch.no_grad():
        acc = [float((twin(threat.to_grid(threat.project(a, x), x)).argmax(1) == y).float().mean()) for a in (ours, theirs)]
    assert acc[0] < float((twin(x).argmax(1) == y).float().mean())  # the attack does something
    assert abs(acc[0] - acc[1]) <= 0.01, acc


def test_cli_verifies_an_external_onnx_file(external, tmp_path, capsys):
    code, out, err = run_cli(["verify", external["qoperator"], "--data", "mnist", "--limit", "24", "--budget", "fast",
                              "--attack-param", "square.queries=20", "--attack-param", "apgd-ce.steps=5",
                              "--engines", "onnxruntime", "--threads", "1", "--out", tmp_path / "v"], capsys)
    assert code == 0, err
    assert "white-box and transfer attacks crafted on: apgd-ce on onnx-twin" in out
    assert "95% CI" in out


def test_external_model_without_data_or_with_the_wrong_data(external, tmp_path, capsys):
    code, _, err = run_cli(["verify", external["qdq"], "--out", tmp_path / "a"], capsys)
    assert code == 2 and "verify needs test data for a model without a checkpoint: pass --data" in err
    code, _, err = run_cli(["verify", external["qdq"], "--data", "digits", "--out", tmp_path / "b"], capsys)
    assert code == 2 and "digits images are 1x8x8 (CxHxW) but the model's input 'input' is NCHW [N,1,28,28]" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
@pytest.mark.qemu
def test_verify_the_aarch64_library_under_qemu(external, mnist_x, tmp_path):  # noqa: F811
    require_qemu()
    onnx_path = external["qoperator"]
    lib = compile_artifact(onnx_path, "aarch64", onnx_path.parent)
    x = mnist_x[:32]
    with torch.no_grad():
        assert np.array_equal(graph_twin(onnx_path)(torch.from_numpy(x)).numpy(), load(lib)(x))
    cfg = _cfg(external["float"], limit=12, batch_size=12, engines=["aarch64"],
               attack_params={"apgd-ce": {"steps": 5}, "transfer": {"steps": 5}, "square": {"queries": 8}},
               validity={"points": 6})
    verify_stage(lib, cfg, tmp_path / "v", progress=False)
    r = json.loads((tmp_path / "v" / "report.json").read_text())
    assert r["deployed"] == ["tvm-aarch64"] and r["queries"]["square"]["tvm-aarch64"] > 0
    assert r["agreement"]["tvm-aarch64"]["clean"] == 1.0 and r["agreement"]["tvm-aarch64"]["adversarial"] == 1.0
    assert r["timing"]["latency"]["tvm-aarch64"]["emulated"] == "emulated (qemu user mode)"
    assert "emulated (qemu user mode)" in (tmp_path / "v" / "summary.txt").read_text()


def test_an_engine_that_returns_labels_only_gets_the_decision_attack(external, tmp_path):
    """The same model with an ArgMax head: the twin differentiates the logits before it, Square
    cannot query the engine (no scores), the decision-based RayS does."""
    import onnx

    model = onnx.load(str(external["qoperator"]))
    out = model.graph.output[0].name
    model.graph.node.append(onnx.helper.make_node("ArgMax", [out], ["label"], axis=1, keepdims=0))
    del model.graph.output[:]
    model.graph.output.append(onnx.helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N"]))
    path = tmp_path / "labels.onnx"
    onnx.save(model, str(path))
    cfg = _cfg(external["float"], engines=["onnxruntime"], attacks=["apgd-ce", "square"],
               attack_params={"apgd-ce": {"steps": 5}, "square": {"queries": 20}, "rays": {"queries": 60}})
    verify_stage(path, cfg, tmp_path / "v", progress=False)
    r = json.loads((tmp_path / "v" / "report.json").read_text())
    assert r["label_only"] == ["onnxruntime"] and r["model"]["onnx"]["output"] == "labels"
    assert [a["name"] for a in r["attacks"]] == ["apgd-ce", "square", "rays"]
    robust_before = round(r["models"]["onnxruntime"]["robust_acc"]["apgd-ce"] * r["n"])
    assert r["queries"]["square"]["onnxruntime"] == 0  # nothing left to score: Square attacked only the twin
    assert r["queries"]["rays"]["onnxruntime"] > robust_before
    assert r["agreement"]["onnxruntime"]["clean"] == 1.0
    assert "returns labels only" in (tmp_path / "v" / "summary.txt").read_text()


def test_an_artifact_folder_and_a_twin_that_is_not_there(external, tmp_path, capsys):
    folder = external["qdq"].parent  # its manifest lists the x86 library robustq compiled from qdq.onnx
    code, out, err = run_cli(["verify", folder, "--data", "mnist", "--limit", "12", "--attacks", "apgd-ce",
                              "--attack-param", "apgd-ce.steps=3", "--threads", "1", "--out", tmp_path / "v"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "v" / "report.json").read_text())
    assert r["artifact"]["kind"] == "compiled" and r["deployed"] == ["onnxruntime", "tvm-x86"]
    # two libraries compiled from the same external file: the folder stands for that file
    from robustq_deploy.manifest import Manifest

    two = tmp_path / "two"
    two.mkdir()
    lib = Manifest.load(folder).find(folder / "model.x86.so")
    for name in ("model.x86.so", "copy.x86.so"):
        shutil.copy(folder / "model.x86.so", two / name)
        Manifest.load(two).add(two / name, "compiled", "compile", config=lib.config, meta=lib.meta)
    code, _, err = run_cli(["verify", two, "--data", "mnist", "--limit", "4", "--attacks", "apgd-ce",
                            "--attack-param", "apgd-ce.steps=1", "--threads", "1", "--out", tmp_path / "v2"], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "v2" / "report.json").read_text())
    assert r["artifact"]["kind"] == "onnx" and len(r["deployed"]) == 3
    assert "SKIPPED CHECK gradient_masking" in out  # no query attack ran
    code, _, err = run_cli(["verify", external["qdq"], "--data", "mnist", "--twin", "checkpoint",
                            "--out", tmp_path / "w"], capsys)
    assert code == 2 and "verify.twin = checkpoint" in err and "has no checkpoint in its manifest lineage" in err
