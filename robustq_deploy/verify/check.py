"""``robustq check``: apply thresholds to a verification report; JSON and JUnit XML results.

Thresholds (fractions in [0, 1]) apply to every deployed engine in the report:
``min_clean`` to its clean accuracy, ``min_robust`` to its worst-case robust accuracy, ``max_drop``
to the accuracy it loses against the PyTorch twin (clean and robust). Any validity flag of the
report fails the check too. :func:`junit_xml` also writes verify's ``report.junit.xml`` (every
validity check, passed, failed or skipped).
Only a report that its folder's manifest lists with the same bytes is checked (and its summary,
HTML and JUnit files must match their recorded hashes): an edited or foreign report is refused.
Exit codes (CLI): 0 all passed, 1 a threshold or flag failed, 2 bad input (unlisted, modified,
unreadable or malformed report, threshold outside [0, 1]).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ..config import CheckConfig
from ..errors import ArtifactError, ConfigError
from ..manifest import atomic_write_text, dumps_json, inside_path, read_verified, resolve_input, sha256_file

Result = dict[str, Any]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _frac_ok(v: Any) -> bool:
    return _num(v) and 0 <= v <= 1


def report_problems(report: Any) -> list[str]:
    """Every field ``check`` reads, checked for its type and range (names the first bad ones)."""
    if not isinstance(report, dict):
        return ["the report is not a JSON object"]
    out = []
    models, deployed = report.get("models"), report.get("deployed")
    if not isinstance(models, dict) or not isinstance(deployed, list) or not all(isinstance(d, str) for d in deployed):
        return ["no 'models' object or 'deployed' list of engine names"]
    for eng in deployed + (["twin"] if "twin" in models else []):
        m = models.get(eng)
        if not isinstance(m, dict) or not _frac_ok(m.get("clean_acc")) or not isinstance(m.get("robust_acc"), dict):
            out.append(f"models.{eng} lacks clean_acc in [0, 1] / robust_acc")
            continue
        bad = [k for k, v in m["robust_acc"].items() if not _frac_ok(v)]
        if bad:
            out.append(f"models.{eng}.robust_acc.{bad[0]} is not a fraction in [0, 1]")
    validity = report.get("validity", [])
    if not isinstance(validity, list):
        out.append("validity is not a list")
    else:
        for i, r in enumerate(validity):
            if not (isinstance(r, dict) and r.get("status") in ("pass", "fail", "skip")
                    and isinstance(r.get("name"), str) and isinstance(r.get("message"), str)):
                out.append(f"validity[{i}] lacks name / message / status (pass, fail or skip)")
    flags = report.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, dict) and isinstance(f.get("name"), str)
                                              and isinstance(f.get("message"), str) for f in flags):
        out.append("flags is not a list of {name, message}")
    return out


def read_report(path: str | Path, sha256: str | None = None) -> dict[str, Any]:
    """A verification report, checked for the fields ``check`` reads (one-line errors otherwise).
    With ``sha256`` it is parsed from exactly the bytes that match it."""
    p = Path(path)
    try:
        data = read_verified(p, sha256) if sha256 is not None else p.read_bytes()
        report = json.loads(data.decode())
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot read report ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{p}: not a JSON report ({getattr(exc, 'msg', exc)})") from None
    problems = report_problems(report)
    if problems:
        raise ArtifactError(f"{p}: malformed report: {'; '.join(problems[:3])}")
    return report


def recorded_report(path: str | Path) -> dict[str, Any]:
    """The report at ``path`` if its folder's manifest lists it with these bytes, and its summary,
    HTML page and JUnit file with theirs: ``check`` gates only on what verify recorded."""
    art = resolve_input(path, kind="report")
    for view in art.meta.get("files", {}).values() if isinstance(art.meta.get("files"), dict) else ():
        try:
            f = art.root / inside_path(view.get("path"), "report file")
        except (ValueError, AttributeError) as exc:
            raise ArtifactError(f"{art.file}: malformed manifest entry ({exc})") from None
        if not f.is_file() or sha256_file(f) != view.get("sha256"):
            raise ArtifactError(f"{f}: missing or modified since verify recorded it with {art.file.name}; "
                                "run verify again")
    return read_report(art.file, art.sha256)


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
    twin = report["models"].get(report.get("white_box_twin", "twin"), {})
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
    for name, m in report["models"].items():
        worst = m["robust_acc"].get("worst_case") if isinstance(m, dict) else None
        if worst is not None and worst > m["clean_acc"]:
            results.append(_result(f"{name}.consistent", False, worst, m["clean_acc"],
                                   f"{name}: robust accuracy {worst:.4f} exceeds clean accuracy {m['clean_acc']:.4f}; "
                                   "the report cannot be right"))
    if cfg.min_certified is not None:
        from ..certify.report import certified_accuracy

        acc = certified_accuracy(report)
        ok = acc is not None and acc >= cfg.min_certified
        shown = "missing (verify without --certify)" if acc is None else f"{acc:.4f}"
        results.append(_result("certified", ok, acc, cfg.min_certified,
                               f"certified robust accuracy {shown} {'>=' if ok else '<'} {cfg.min_certified}"))
    # failed validity checks fail the check; skipped ones are listed so a reader sees what was not checked
    return results + [r for r in validity_results(report) if not r["passed"] or r.get("skipped")]


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
    report = recorded_report(report_path)
    results = run_checks(report, cfg)
    passed = all(r["passed"] for r in results)
    out = Path(out_dir) if out_dir is not None else Path(report_path).parent
    atomic_write_text(out / "check.json", dumps_json({"passed": passed, "thresholds": dataclasses.asdict(cfg),
                                                      "results": results}))
    atomic_write_text(out / "check.junit.xml", junit_xml(results))
    return passed, results
