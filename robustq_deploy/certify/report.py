"""Certification in the verify report (``robustq verify --certify interval|linear|complete``).

:func:`add_certification` certifies the points the verify stage attacked, on the ONNX graph the
deployed artifact was built from, at the main radius and at every sweep radius, and joins the
verdicts with the attacks' per-point results: a point is *certified* (bounds prove it), *broken*
(misclassified clean, by an attack on any deployed engine, or by a counterexample of the
complete check) or *unknown*. It writes:

* ``report["certified"]``: method, graph, seconds and per radius the certified, broken and
  unknown fractions, the worst-case empirical accuracy of each deployed engine and the gap
  (empirical minus certified); the per-point verdicts at the main radius;
* a ``certified`` key in each ``report["eps_sweep"]`` row (the text and HTML reports list it
  beside the attacks' numbers);
* one validity record per radius, ``certified.eps=<eps>``, whose message states certified and
  empirical accuracy and the gap; it *fails* if an attack broke a certified point (the bounds
  would be unsound) or if the graph could not be certified (the reason is the message), so the
  JUnit file, the text summary and ``robustq check`` see it.

``robustq check --min-certified A`` reads ``certified_acc`` of the main radius.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import RobustqError
from .certifier import BROKEN, CERTIFIED, UNKNOWN, certify

ROBUST = -1  # the attack ensemble's code of a point no attack broke


def _codes(state: Any, prefix: str, names: list[str], batches: int) -> dict[str, np.ndarray] | None:
    """Per-point attack codes of each engine from the verify stage's units, or None."""
    try:
        return {n: np.concatenate([state.get(f"{prefix}/b{b}")[0][f"{n}.code"].numpy() for b in range(batches)])
                for n in names}
    except (KeyError, AttributeError):
        return None


def _record(name: str, status: str, value: Any, bound: Any, message: str) -> dict[str, Any]:
    return {"name": name, "status": status, "value": value, "bound": bound, "message": message}


def add_certification(report: dict[str, Any], cfg: Any, onnx_art: Any, x: Any, y: Any, state: Any,
                      engines: list | None = None, progress: bool = True) -> None:
    """Certify and record (see the module docstring); nothing happens when ``cfg.certify`` is unset."""
    method = getattr(cfg, "certify", None)
    if not method:
        return
    records: list[dict[str, Any]] = []
    section: dict[str, Any] = {"method": method, "per_eps": []}
    report["certified"] = section
    names = list(report.get("deployed") or []) or ["twin"]
    batches = math.ceil(len(y) / cfg.batch_size) if len(y) else 0
    radii = [("main", float(cfg.eps))] + [(f"sweep{j}", float(e)) for j, e in enumerate(cfg.eps_sweep)]
    try:
        if cfg.norm != "linf":
            raise RobustqError(f"certification covers L-inf balls only, not {cfg.norm}")
        if onnx_art is None:
            raise RobustqError("no ONNX graph in the artifact's lineage to certify")
        section["graph"] = str(onnx_art.file)
        replay = None
        if engines:
            import torch

            replay = lambda xs: engines[0](torch.from_numpy(xs)).numpy()  # noqa: E731
        xs, ys = x.numpy().astype(np.float32), y.numpy().astype(np.int64)
        results = []
        for prefix, eps in radii:
            res = certify(onnx_art.file, xs, ys, eps, method, replay=replay, progress=progress)
            results.append((prefix, eps, res))
    except RobustqError as exc:
        section["error"] = str(exc)
        records.append(_record("certified", "fail", None, None, f"certification not done: {exc}"))
        _append(report, records)
        return
    models = report.get("models", {})
    sweep_rows = {round(r["eps"], 12): r for r in report.get("eps_sweep", [])}
    for prefix, eps, res in results:
        section["form"] = res.form
        codes = _codes(state, prefix, names, batches)
        status = res.status.copy()
        broken_by_attack = np.zeros(len(status), bool)
        if codes is not None:
            for c in codes.values():
                broken_by_attack |= c != ROBUST
        violated = int(np.sum((status == CERTIFIED) & broken_by_attack))
        status[broken_by_attack] = BROKEN
        if prefix == "main":
            worst = {n: models[n]["robust_acc"]["worst_case"] for n in names if n in models}
        else:
            row = sweep_rows.get(round(eps, 12), {})
            worst = {n: row[n] for n in names if n in row}
        entry = {"eps": eps, "certified_acc": res.certified_acc, "broken": float(np.mean(status == BROKEN)),
                 "unknown": float(np.mean(status == UNKNOWN)), "seconds": round(res.seconds, 3),
                 "worst_case": worst, "gap": {n: w - res.certified_acc for n, w in worst.items()},
                 "certified_broken": violated, "per_point_attacks": codes is not None}
        section["per_eps"].append(entry)
        if prefix == "main":
            section["points"] = [int(s) for s in status]
        elif round(eps, 12) in sweep_rows:
            sweep_rows[round(eps, 12)]["certified"] = res.certified_acc
        over = {n: w for n, w in worst.items() if res.certified_acc > w + 1e-12}
        ok = violated == 0 and not over
        gap = ", ".join(f"{n} {w:.4f} (gap {w - res.certified_acc:+.4f})" for n, w in worst.items()) or "none"
        message = (f"certified robust accuracy {res.certified_acc:.4f} at eps {eps:g} ({method} bounds on the "
                   f"{res.form} graph; {entry['broken']:.4f} broken, {entry['unknown']:.4f} unknown); worst-case "
                   f"empirical: {gap}")
        if violated:
            message += f"; {violated} certified point(s) broken by an attack: the bounds are unsound"
        elif over:
            message += "; certified above empirical: the bounds are unsound"
        records.append(_record(f"certified.eps={eps:g}", "pass" if ok else "fail", res.certified_acc,
                               min(worst.values()) if worst else None, message))
    _append(report, records)


def _append(report: dict[str, Any], records: list[dict[str, Any]]) -> None:
    report.setdefault("validity", []).extend(records)
    report.setdefault("flags", []).extend({"name": r["name"], "message": r["message"]} for r in records
                                          if r["status"] == "fail")


def certified_accuracy(report: dict[str, Any]) -> float | None:
    """Certified robust accuracy at the report's main radius, or None without certification."""
    per = (report.get("certified") or {}).get("per_eps") or []
    return per[0]["certified_acc"] if per else None


__all__ = ["add_certification", "certified_accuracy"]
