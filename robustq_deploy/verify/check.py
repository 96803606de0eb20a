"""``robustq check``: apply thresholds to a verification report; JSON and JUnit XML results.

Thresholds (fractions in [0, 1]) apply to every deployed engine in the report:
``min_clean`` to its clean accuracy, ``min_robust`` to its worst-case robust accuracy, ``max_drop``
to the accuracy it loses against the PyTorch twin (clean and robust). Any validity flag in the
report fails the check too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ..config import CheckConfig
from ..errors import ArtifactError
from ..manifest import atomic_write_text, dumps_json


def read_report(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        report = json.loads(p.read_text())
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot read report ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{p}: not a JSON report ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(report, dict) or "models" not in report or "deployed" not in report:
        raise ArtifactError(f"{p}: not a robustq verification report (no 'models'/'deployed')")
    return report


def run_checks(report: dict[str, Any], cfg: CheckConfig) -> list[dict[str, Any]]:
    """One result per (engine, criterion): name, passed, value, threshold, message."""
    results = []
    twin = report["models"].get("twin", {})

    def add(name, passed, value, threshold, message):
        results.append({"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "message": message})

    for eng in report["deployed"]:
        m = report["models"][eng]
        clean = m["clean_acc"]
        robust = m["robust_acc"].get("worst_case")
        if cfg.min_clean is not None:
            add(f"{eng}.clean", clean >= cfg.min_clean, clean, cfg.min_clean,
                f"{eng} clean accuracy {clean:.4f} {'>=' if clean >= cfg.min_clean else '<'} {cfg.min_clean}")
        if cfg.min_robust is not None:
            ok = robust is not None and robust >= cfg.min_robust
            add(f"{eng}.robust", ok, robust, cfg.min_robust,
                f"{eng} worst-case robust accuracy {robust if robust is None else f'{robust:.4f}'} {'>=' if ok else '<'} {cfg.min_robust}")
        if cfg.max_drop is not None and twin:
            drops = {"clean": twin["clean_acc"] - clean}
            if robust is not None and twin["robust_acc"].get("worst_case") is not None:
                drops["robust"] = twin["robust_acc"]["worst_case"] - robust
            worst = max(drops.values())
            add(f"{eng}.drop", worst <= cfg.max_drop, worst, cfg.max_drop,
                f"{eng} drop from twin {worst:.4f} ({', '.join(f'{k} {v:+.4f}' for k, v in drops.items())}) {'<=' if worst <= cfg.max_drop else '>'} {cfg.max_drop}")
    for flag in report.get("flags", []):
        add(f"flag.{flag['name']}", False, None, None, f"validity flag: {flag['message']}")
    return results


def junit_xml(results: list[dict[str, Any]], suite: str = "robustq.check") -> str:
    failures = sum(not r["passed"] for r in results)
    ts = ET.Element("testsuite", name=suite, tests=str(len(results)), failures=str(failures), errors="0")
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=suite, name=r["name"])
        if not r["passed"]:
            ET.SubElement(tc, "failure", message=r["message"]).text = r["message"]
        else:
            ET.SubElement(tc, "system-out").text = r["message"]
    root = ET.Element("testsuites")
    root.append(ts)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def check_report(report_path: str | Path, cfg: CheckConfig, out_dir: str | Path | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """Apply ``cfg`` to the report; writes ``check.json`` and ``check.junit.xml`` into ``out_dir``
    (default: the report's folder). Returns (all passed, results)."""
    report = read_report(report_path)
    results = run_checks(report, cfg)
    passed = all(r["passed"] for r in results)
    out = Path(out_dir) if out_dir is not None else Path(report_path).parent
    atomic_write_text(out / "check.json", dumps_json({"passed": passed, "thresholds": cfg.__dict__, "results": results}))
    atomic_write_text(out / "check.junit.xml", junit_xml(results))
    return passed, results
