"""``robustq check``: passes a report above its thresholds, fails one below or with a validity
flag, and answers bad input with exit code 2 and a one-line error."""
import json
from xml.etree import ElementTree as ET

import pytest

from robustq_deploy.manifest import Manifest

from ..helpers import run_cli


def _check(capsys, report, *args):
    return run_cli(["check", report, *args], capsys)


def _recorded(folder, text: str):
    """A report file recorded in ``folder``'s manifest, as verify records its reports."""
    path = folder / "report.json"
    path.write_text(text)
    Manifest.load(folder).add(path, "report", "verify")
    return path


def test_passes_above_threshold(report_dir, tmp_path, capsys):
    r = json.loads((report_dir / "report.json").read_text())
    low = min(r["models"][e]["robust_acc"]["worst_case"] for e in r["deployed"])
    code, out, _ = _check(capsys, report_dir / "report.json", "--min-clean", "0.8", "--min-robust", f"{low - 0.01:.4f}",
                          "--max-drop", "0.02", "--out", tmp_path)
    assert code == 0, out
    assert out.count("PASS") == 6 and "FAIL" not in out
    suite = ET.parse(tmp_path / "check.junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "6" and suite.get("failures") == "0"
    assert json.loads((tmp_path / "check.json").read_text())["passed"] is True


def test_fails_below_threshold(report_dir, tmp_path, capsys):
    code, out, _ = _check(capsys, report_dir / "report.json", "--min-robust", "0.999", "--out", tmp_path)
    assert code == 1 and out.count("FAIL") == 2
    suite = ET.parse(tmp_path / "check.junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "2" and suite.find("testcase/failure") is not None


def test_a_validity_flag_fails_the_check(report_dir, tmp_path, capsys):
    r = json.loads((report_dir / "report.json").read_text())
    rec = next(v for v in r["validity"] if v["name"] == "gradient_masking.onnxruntime")
    rec.update(status="fail", value=0.2, message="onnxruntime: square broke 20.00% of the points")
    r["flags"] = [{"name": rec["name"], "message": rec["message"]}]
    code, out, _ = _check(capsys, _recorded(tmp_path, json.dumps(r)), "--min-clean", "0.5")
    assert code == 1 and "FAIL  onnxruntime: square broke 20.00%" in out


def test_skipped_validity_checks_are_listed(report_dir, tmp_path, capsys):
    """A check that could not run is no pass: ``check`` names it (SKIP), without failing."""
    from robustq_deploy.verify.robustness import summary_text

    r = json.loads((report_dir / "report.json").read_text())
    r["validity"] = [v for v in r["validity"] if not v["name"].startswith("gradient_masking")]
    r["validity"].insert(0, {"name": "gradient_masking", "status": "skip", "value": None, "bound": 0.01,
                             "message": "NOT CHECKED: gradient masking needs a query and a gradient attack; "
                                        "no query-based attack ran (add square)"})
    code, out, _ = _check(capsys, _recorded(tmp_path, json.dumps(r)), "--min-clean", "0.5")
    assert code == 0 and "SKIP  NOT CHECKED: gradient masking needs a query and a gradient attack" in out
    assert "SKIPPED CHECK gradient_masking: NOT CHECKED" in summary_text(r)
    suite = ET.parse(tmp_path / "check.junit.xml").getroot().find("testsuite")
    assert suite.get("skipped") == "1"


@pytest.mark.parametrize("content,msg", [
    ("{not json", "not a JSON report"),
    ("[]", "not a JSON object"),
    ('{"models": {}}', "no 'models' object or 'deployed' list"),
    ('{"models": {"onnxruntime": {"clean_acc": "high"}}, "deployed": ["onnxruntime"]}', "lacks clean_acc"),
    ('{"models": {"onnxruntime": {"clean_acc": 0.9, "robust_acc": {"worst_case": "high"}}}, "deployed": ["onnxruntime"]}',
     "robust_acc.worst_case is not a fraction"),
    ('{"models": {"onnxruntime": {"clean_acc": 0.9, "robust_acc": {}}}, "deployed": ["onnxruntime"], '
     '"validity": [{"name": "x", "message": "m"}]}', "validity[0] lacks"),
])
def test_malformed_recorded_report_exits_2(tmp_path, capsys, content, msg):
    code, _, err = _check(capsys, _recorded(tmp_path, content), "--min-clean", "0.5")
    assert code == 2 and msg in err and err.count("\n") == 1, err


def test_missing_report_exits_2(tmp_path, capsys):
    code, _, err = _check(capsys, tmp_path / "report.json", "--min-clean", "0.5")
    assert code == 2 and "no such file" in err and err.count("\n") == 1, err


def test_an_edited_report_is_refused(report_dir, tmp_path, capsys):
    """Every accuracy edited to 1.0 would pass every threshold: check refuses the report instead."""
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(report_dir, copy)
    r = json.loads((copy / "report.json").read_text())
    for m in r["models"].values():
        m["clean_acc"] = 1.0
        m["robust_acc"] = {k: 1.0 for k in m["robust_acc"]}
    (copy / "report.json").write_text(json.dumps(r))
    code, _, err = _check(capsys, copy / "report.json", "--min-clean", "0.99", "--min-robust", "0.99", "--max-drop", "0")
    assert code == 2 and "does not match the manifest" in err and err.count("\n") == 1, err
    (copy / "manifest.json").unlink()  # a report that no manifest lists
    code, _, err = _check(capsys, copy / "report.json", "--min-clean", "0.99")
    assert code == 2 and "not listed" in err, err


def test_an_edited_summary_or_page_is_refused(report_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(report_dir, copy)
    (copy / "report.html").write_text("<p>all robust</p>")
    code, _, err = _check(capsys, copy / "report.json", "--min-clean", "0.5")
    assert code == 2 and "report.html: missing or modified" in err, err


def test_robust_above_clean_fails(tmp_path, capsys):
    r = {"models": {"onnxruntime": {"clean_acc": 0.55, "robust_acc": {"worst_case": 1.0}}}, "deployed": ["onnxruntime"]}
    code, out, _ = _check(capsys, _recorded(tmp_path, json.dumps(r)))
    assert code == 1 and "exceeds clean accuracy" in out


def test_threshold_outside_unit_interval_exits_2(report_dir, tmp_path, capsys):
    code, _, err = _check(capsys, report_dir / "report.json", "--min-robust", "85", "--out", tmp_path)
    assert code == 2 and "check.min_robust: must be a fraction in [0, 1], got 85.0" in err
