"""``robustq verify --certify`` and ``robustq check --min-certified`` on a real deployed model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustq_deploy.config import CheckConfig, ExportConfig, VerifyConfig, from_dict
from robustq_deploy.export import export_stage
from robustq_deploy.manifest import Manifest, resolve_input
from robustq_deploy.verify import check_report, verify_stage
from tests.helpers import run_cli

VERIFY = {"attacks": ["pgd", "square"], "eps": 0.05, "eps_sweep": [0.02], "steps": 5, "limit": 96, "batch_size": 48,
          "threads": 1, "engines": ["onnxruntime"], "float_model": False, "amplification": False,
          "attack_params": {"square": {"queries": 100}}, "certify": "linear"}


@pytest.fixture(scope="module")
def deployed(zoo, tmp_path_factory) -> dict[str, Path]:
    """digits-cnn int8 trained by ibp (the shared zoo's ``digits-cnn-ibp``), exported as integer
    and qdq ONNX (one artifact folder)."""
    out = tmp_path_factory.mktemp("certify-deployed")
    ckpt = resolve_input(zoo.copy("digits-cnn-ibp", out), kind="checkpoint")
    return {fmt: export_stage(ckpt.file, ExportConfig(format=fmt), out).file for fmt in ("integer", "qdq")}


@pytest.fixture(scope="module")
def report_dir(deployed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certify-report")
    verify_stage(deployed["integer"], from_dict(VerifyConfig, VERIFY), out, progress=False)
    return out


def test_report_has_certification_beside_the_attacks(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    cert = report["certified"]
    assert cert["method"] == "linear" and cert["form"] == "integer"
    main, sweep = cert["per_eps"]
    assert (main["eps"], sweep["eps"]) == (0.05, 0.02)
    worst = report["models"]["onnxruntime"]["robust_acc"]["worst_case"]
    assert 0.3 <= main["certified_acc"] <= worst  # ibp makes it certifiable; never above the empirical
    assert main["gap"]["onnxruntime"] == pytest.approx(worst - main["certified_acc"])
    assert main["certified_broken"] == 0 and main["per_point_attacks"]
    points = cert["points"]
    assert len(points) == 96 and sum(p == 1 for p in points) == round(main["certified_acc"] * 96)
    assert sum(p == -1 for p in points) / 96 >= 1 - worst - 1e-9  # every attacked point counts as broken
    assert report["eps_sweep"][0]["certified"] == sweep["certified_acc"] >= main["certified_acc"]
    names = {r["name"]: r for r in report["validity"]}
    assert names["certified.eps=0.05"]["status"] == "pass"
    assert not any(f["name"].startswith("certified") for f in report["flags"])


def test_text_html_and_junit_show_it(report_dir):
    text = (report_dir / "summary.txt").read_text()
    assert "certified robust accuracy" in text and "gap" in text and "certified 0." in text
    assert "certified robust accuracy" in (report_dir / "report.html").read_text()
    assert 'name="validity.certified.eps=0.05"' in (report_dir / "report.junit.xml").read_text()


def test_check_min_certified(report_dir, tmp_path):
    report = json.loads((report_dir / "report.json").read_text())
    acc = report["certified"]["per_eps"][0]["certified_acc"]
    ok, results = check_report(report_dir / "report.json", CheckConfig(min_certified=acc), tmp_path)
    # the certified check comes first; validity checks follow and depend on the trained weights (a
    # sanity flag may fire on one CPU's training and not another's), so only their sum is checked
    assert results[0]["name"] == "certified" and results[0]["passed"]
    assert ok == all(r["passed"] for r in results)
    ok, results = check_report(report_dir / "report.json", CheckConfig(min_certified=min(1.0, acc + 0.01)), tmp_path)
    assert not ok and not results[0]["passed"] and "certified robust accuracy" in results[0]["message"]


def test_check_without_certification_fails(report_dir, tmp_path):
    report = json.loads((report_dir / "report.json").read_text())
    del report["certified"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    Manifest.load(tmp_path).add(path, "report", "verify")  # check reads only recorded reports
    ok, results = check_report(path, CheckConfig(min_certified=0.1), tmp_path)
    assert not ok and "missing" in results[0]["message"]


def test_cli(deployed, report_dir, tmp_path, capsys):
    code, out, _ = run_cli(["check", report_dir / "report.json", "--min-certified", "0.999", "--out", tmp_path], capsys)
    assert code == 1 and "FAIL  certified robust accuracy" in out
    code, _, err = run_cli(["verify", deployed["integer"], "--certify", "exact", "--out", tmp_path], capsys)
    assert code == 2 and "verify.certify: unknown method 'exact'; choose one of interval, linear, complete" in err


def test_qdq_graph_and_a_graph_that_cannot_be_certified(deployed, tmp_path):
    """The qdq form is certified as well; a radius in L2 cannot be, which the report says (a failed
    record, not a crash after the attacks)."""
    cfg = from_dict(VerifyConfig, {**VERIFY, "limit": 48, "eps_sweep": [], "attacks": ["pgd"], "attack_params": {}})
    verify_stage(deployed["qdq"], cfg, tmp_path / "qdq", progress=False)
    report = json.loads((tmp_path / "qdq" / "report.json").read_text())
    assert report["certified"]["form"] == "qdq" and report["certified"]["per_eps"][0]["certified_broken"] == 0
    cfg = from_dict(VerifyConfig, {**VERIFY, "limit": 48, "eps_sweep": [], "attacks": ["pgd"], "attack_params": {},
                                   "norm": "l2"})
    verify_stage(deployed["integer"], cfg, tmp_path / "l2", progress=False)
    report = json.loads((tmp_path / "l2" / "report.json").read_text())
    assert "L-inf" in report["certified"]["error"]
    assert any(f["name"] == "certified" for f in report["flags"])
