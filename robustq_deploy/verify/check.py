"""``robustq check``: apply thresholds to a verification report; JSON and JUnit XML results.

Thresholds (fractions in [0, 1]) apply to every deployed engine in the report:
``min_clean`` to its clean accuracy, ``min_robust`` to its worst-case robust accuracy, ``max_drop``
to the accuracy it loses against the PyTorch twin (clean and robust). Any validity flag of the
report fails the check too. :func:`junit_xml` also writes verify's ``report.junit.xml`` (every
validity check, passed, failed or skipped).
Exit codes (CLI): 0 all passed, 1 a threshold or flag failed, 2 bad input (unreadable or
malformed report, threshold outside [0, 1]).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ..config import CheckConfig
from ..errors import ArtifactError, ConfigError
from ..manifest import atomic_write_text, dumps_json

Result = dict[str, Any]


def read_report(path: str | Path) -> dict[str, Any]:
    """A verification report, checked for the fields ``check`` reads (one-line errors otherwise)."""
    p = Path(path)
    try:
        report = json.loads(p.read_text())
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot read report ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{p}: not a JSON report ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(report, dict) or not isinstance(report.get("models"), dict) or not isinstance(report.get("deployed"), list):
        raise ArtifactError(f"{p}: not a robustq verification report (no 'models'/'deployed')")
    for eng in report["deployed"] + (["twin"] if "twin" in report["models"] else []):
        m = report["models"].get(eng)
        ok = (isinstance(m, dict) and isinstance(m.get("clean_acc"), (int, float))
              and isinstance(m.get("robust_acc"), dict))
        if not ok:
            raise ArtifactError(f"{p}: malformed report: models.{eng} lacks clean_acc / robust_acc")
    return report


def _check_thresholds(cfg: CheckConfig) -> None:
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is not None and not 0 <= v <= 1:
            raise ConfigError(f"check.{f.name}: must be a fraction in [0, 1], got {v!r}")


def _result(name: str, passed: bool, value, threshold, message: str, skipped: bool = False) -> Result:
    return {"name": name, "passed": bool(passed), "skipped": skipped, "value": value, "threshold": threshold,
            "message": message}


def validity_results(report: dict[str, Any]) -> list[Result]:
    """The report's validity checks as results (reports without them: their flags as failures)."""
    if "validity" in report:
        return [_result(f"validity.{r['name']}", r["status"] != "fail", r["value"], r["bound"], r["message"],
                        skipped=r["status"] == "skip") for r in report["validity"]]
    return [_result(f"flag.{f['name']}", False, None, None, f"validity flag: {f['message']}") for f in report.get("flags", [])]


def run_checks(report: dict[str, Any], cfg: CheckConfig) -> list[Result]:
    """One result per (engine, criterion), then one failure per validity flag (all validity checks,
    passed and skipped ones too, are in the JUnit file that verify writes next to the report)."""
    results = []
    twin = report["models"].get("twin", {})
    for eng in report["deployed"]:
        m = report["models"][eng]
        clean = m["clean_acc"]
        robust = m["robust_acc"].get("worst_case")
        if cfg.min_clean is not None:
            ok = clean >= cfg.min_clean
            results.append(_result(f"{eng}.clean", ok, clean, cfg.min_clean,
                                   f"{eng} clean accuracy {clean:.4f} {'>=' if ok else '<'} {cfg.min_clean}"))
        if cfg.min_robust is not None:
            ok = robust is not None and robust >= cfg.min_robust
            shown = "missing" if robust is None else f"{robust:.4f}"
            results.append(_result(f"{eng}.robust", ok, robust, cfg.min_robust,
                                   f"{eng} worst-case robust accuracy {shown} {'>=' if ok else '<'} {cfg.min_robust}"))
        if cfg.max_drop is not None and twin:
            drops = {"clean": twin["clean_acc"] - clean}
            if robust is not None and twin["robust_acc"].get("worst_case") is not None:
                drops["robust"] = twin["robust_acc"]["worst_case"] - robust
            worst = max(drops.values())
            ok = worst <= cfg.max_drop
            results.append(_result(f"{eng}.drop", ok, worst, cfg.max_drop,
                                   f"{eng} drop from twin {worst:.4f} ({', '.join(f'{k} {v:+.4f}' for k, v in drops.items())}) "
                                   f"{'<=' if ok else '>'} {cfg.max_drop}"))
    if cfg.min_certified is not None:
        from ..certify.report import certified_accuracy

        acc = certified_accuracy(report)
        ok = acc is not None and acc >= cfg.min_certified
        shown = "missing (verify without --certify)" if acc is None else f"{acc:.4f}"
        results.append(_result("certified", ok, acc, cfg.min_certified,
                               f"certified robust accuracy {shown} {'>=' if ok else '<'} {cfg.min_certified}"))
    return results + [r for r in validity_results(report) if not r["passed"]]


def junit_xml(results: list[Result], suite: str = "robustq.check") -> str:
    """JUnit XML: one test case per result, with its value and threshold as properties."""
    failures = sum(not r["passed"] for r in results)
    skipped = sum(bool(r.get("skipped")) for r in results)
    ts = ET.Element("testsuite", name=suite, tests=str(len(results)), failures=str(failures), errors="0",
                    skipped=str(skipped))
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=suite, name=r["name"])
        props = ET.SubElement(tc, "properties")
        for key in ("value", "threshold"):
            ET.SubElement(props, "property", name=key, value=json.dumps(r.get(key)))
        if not r["passed"]:
            ET.SubElement(tc, "failure", message=r["message"]).text = r["message"]
        elif r.get("skipped"):
            ET.SubElement(tc, "skipped", message=r["message"])
        else:
            ET.SubElement(tc, "system-out").text = r["message"]
    root = ET.Element("testsuites")
    root.append(ts)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def check_report(report_path: str | Path, cfg: CheckConfig, out_dir: str | Path | None = None) -> tuple[bool, list[Result]]:
    """Apply ``cfg`` to the report; writes ``check.json`` and ``check.junit.xml`` into ``out_dir``
    (default: the report's folder). Returns (all passed, results)."""
    _check_thresholds(cfg)
    report = read_report(report_path)
    results = run_checks(report, cfg)
    passed = all(r["passed"] for r in results)
    out = Path(out_dir) if out_dir is not None else Path(report_path).parent
    atomic_write_text(out / "check.json", dumps_json({"passed": passed, "thresholds": dataclasses.asdict(cfg),
                                                      "results": results}))
    atomic_write_text(out / "check.junit.xml", junit_xml(results))
    return passed, results
