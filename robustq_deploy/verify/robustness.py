"""Robustness of the deployed artifact, measured on what actually runs: the verify stage.

Models: the fake-quant twin (white-box, straight-through gradients), the float model (the twin's
weights with quantizers off) and every deployed engine (black boxes through
:func:`robustq_deploy.load`). Work is split into resumable units (:mod:`.state`):

* ``main/bK``: the attack ensemble at ``eps`` on batch K (:func:`robustq_deploy.attacks.run_ensemble`):
  gradient and transfer attacks crafted once and scored on twin and engines at once, query
  attacks (Square) run against each deployed engine; agreement of each engine with the twin on
  the twin's worst-case inputs; zero-gradient check; per-layer error amplification;
* ``float/bK``: the gradient and transfer attacks against the float model;
* ``sweepJ/bK``: the sweep attacks at radius J, for twin, engines and float model;
* ``eps1``, ``determinism``: validity probes on the first points.

:func:`evaluate` runs (or resumes) the units and aggregates them; :func:`verify_stage` adds
artifact data, validity flags and latency, and writes the JSON report, a text summary, an HTML
page (:mod:`.html`) and JUnit XML (:mod:`.check`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..attacks import run_ensemble
from ..attacks.checks import looks_like_probabilities, repeat_difference, zero_gradient_mask
from ..config import VerifyConfig, replace, to_dict
from ..errors import ArtifactError
from ..manifest import Manifest, atomic_write_text, dumps_json, find_ancestor
from ..progress import bar as progress_bar, note
from ..train.loop import load_split, read_checkpoint
from .amplification import amplification_sums, combine
from .engines import PIXEL_LEVELS, DeployedClassifier, deployed_engines, float_view, grid_pixels, resolve_deployed
from .plan import Plan, build_plan
from .state import RunState, fingerprint, seeded_generator
from .validity import flags, run_validity

REPORT_NAME = "report.json"
SUMMARY_NAME = "summary.txt"
HTML_NAME = "report.html"
JUNIT_NAME = "report.junit.xml"
REPORT_SCHEMA = 2

Unit = tuple[dict[str, torch.Tensor], dict[str, Any]]


def _frac(mask: torch.Tensor) -> float:
    return int(mask.sum()) / mask.numel() if mask.numel() else 0.0


def model_stats(clean_pred: torch.Tensor, code: torch.Tensor, y: torch.Tensor, attacks: list[str]) -> dict[str, Any]:
    """Clean accuracy, robust accuracy after each attack (each run on the points still robust) and
    in the worst case, and the fraction of points each attack was first to break."""
    robust = {a: _frac((code == -1) | (code > k + 1)) for k, a in enumerate(attacks)}
    robust["worst_case"] = _frac(code == -1)
    return {"clean_acc": _frac(clean_pred == y), "robust_acc": robust,
            "broken": {a: _frac(code == k + 1) for k, a in enumerate(attacks)}}


class Evaluation:
    """The units of one verification and their aggregation."""

    def __init__(self, plan: Plan, cfg: VerifyConfig, twin: nn.Module, engines: list[DeployedClassifier],
                 x: torch.Tensor, y: torch.Tensor):
        self.plan, self.cfg, self.x, self.y = plan, cfg, x, y
        self.twin = twin.eval()
        self.reference = rounding_reference(self.twin)
        self.flt = float_view(twin)
        self.engines = engines
        self.targets: dict[str, Callable] = {"twin": self.twin, **{e.name: e for e in engines}}
        self.sources = {"white-box": self.twin, "twin": self.twin, "float": self.flt}
        # query attacks target what is deployed (the twin only when nothing is); their examples
        # are still scored on the twin
        self.query_targets = tuple(e.name for e in engines) or ("twin",)
        self.float_sources = {"white-box": self.flt, "twin": self.twin, "float": self.flt}
        self.batches = list(range(0, len(y), cfg.batch_size))
        self.check_n = min(cfg.validity.points, len(y))

    def _batch(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[start:start + self.cfg.batch_size], self.y[start:start + self.cfg.batch_size]

    def _gen(self, unit: str) -> Callable[[str], torch.Generator]:
        return lambda key: seeded_generator(self.cfg.seed, unit, key)

    # ------------------------------------------------------------------ units

    def units(self) -> list[tuple[str, Callable[[], Unit]]]:
        out: list[tuple[str, Callable[[], Unit]]] = [("determinism", self.determinism_unit), ("eps1", self.eps1_unit)]
        for b, s in enumerate(self.batches):
            out.append((f"main/b{b}", lambda s=s, b=b: self.main_unit(f"main/b{b}", s)))
            if self.cfg.float_model:
                out.append((f"float/b{b}", lambda s=s, b=b: self.float_unit(f"float/b{b}", s)))
            for j in range(len(self.plan.sweep)):
                out.append((f"sweep{j}/b{b}", lambda s=s, b=b, j=j: self.sweep_unit(f"sweep{j}/b{b}", j, s)))
        return out

    def main_unit(self, unit: str, start: int) -> Unit:
        xb, yb = self._batch(start)
        res = run_ensemble(self.plan.attacks, self.sources, self.targets, xb, yb, self.plan.threat, self._gen(unit),
                           self.query_targets)
        t: dict[str, torch.Tensor] = {}
        for name in self.targets:
            t[f"{name}.clean"], t[f"{name}.adv"], t[f"{name}.code"] = res.clean_pred[name], res.adv_pred[name], res.code[name]
        x_twin = res.x_worst["twin"]
        for e in self.engines:
            t[f"{e.name}.on_twin_adv"] = e.predict(x_twin)
            t[f"{e.name}.clean_tie"] = self._near_ties(xb, t[f"{e.name}.clean"] != t["twin.clean"])
            t[f"{e.name}.adv_tie"] = self._near_ties(x_twin, t[f"{e.name}.on_twin_adv"] != res.adv_pred["twin"])
        t["zero_grad"] = zero_gradient_mask(self.twin, xb, yb)
        scalars: dict[str, Any] = {"queries": res.queries, "seconds": res.seconds}
        if self.cfg.amplification:
            scalars["amplification"] = amplification_sums({"twin": self.twin, "float": self.flt}, xb, x_twin,
                                                          self.plan.threat, self._gen(unit)("amplification"))
        return t, scalars

    def _near_ties(self, x: torch.Tensor, disagree: torch.Tensor) -> torch.Tensor:
        """Of the points where twin and an engine disagree, those where rounding near-ties alone can
        change the winning class (:func:`robustq_deploy.export.reference.deviation.argmax_may_differ`
        on the QDQ graph of the twin): both are then right. All False without a reference graph."""
        out = torch.zeros_like(disagree)
        if self.reference is None or not bool(disagree.any()):
            return out
        from ..export.reference import ReferenceSession
        from ..export.reference.deviation import argmax_may_differ, rounding_deviation

        rows = disagree.nonzero().flatten()
        sess = ReferenceSession(self.reference)
        feeds = {sess.input_names[0]: (grid_pixels(x[rows]) / PIXEL_LEVELS).astype(np.float32)}
        (logits,) = sess.run(None, feeds)
        (bound,) = rounding_deviation(self.reference, feeds).values()
        out[rows] = torch.from_numpy(argmax_may_differ(logits, bound))
        return out

    def float_unit(self, unit: str, start: int) -> Unit:
        xb, yb = self._batch(start)
        res = run_ensemble(self.plan.float_attacks, self.float_sources, {"float": self.flt}, xb, yb,
                           self.plan.threat, self._gen(unit))
        return {"float.clean": res.clean_pred["float"], "float.code": res.code["float"]}, {}

    def sweep_unit(self, unit: str, j: int, start: int) -> Unit:
        threat, attacks = self.plan.sweep[j]
        xb, yb = self._batch(start)
        res = run_ensemble(attacks, self.sources, self.targets, xb, yb, threat, self._gen(unit), self.query_targets)
        t = {f"{name}.code": res.code[name] for name in self.targets}
        if self.cfg.float_model:
            fres = run_ensemble([a for a in attacks if a.access != "query"], self.float_sources, {"float": self.flt},
                                xb, yb, threat, self._gen(f"{unit}/float"))
            t["float.code"] = fres.code["float"]
        return t, {}

    def eps1_unit(self) -> Unit:
        threat, attack = self.plan.eps1
        xs, ys = self.x[:self.check_n], self.y[:self.check_n]
        res = run_ensemble([attack], self.sources, self.targets, xs, ys, threat, self._gen("eps1"))
        return {f"{name}.code": res.code[name] for name in self.targets}, {}

    def determinism_unit(self) -> Unit:
        xs = self.x[:self.check_n]
        diff, probs = {}, {}
        for name, m in self.targets.items():
            diff[name] = repeat_difference(m, xs)
            with torch.no_grad():
                probs[name] = looks_like_probabilities(m(xs))
        return {}, {"determinism": diff, "probabilities": probs}

    # ------------------------------------------------------------------ aggregation

    def aggregate(self, state: RunState) -> dict[str, Any]:
        nb = len(self.batches)

        def cat(prefix: str, key: str) -> torch.Tensor:
            return torch.cat([state.get(f"{prefix}/b{b}")[0][key] for b in range(nb)]) if nb else torch.zeros(0)

        y = self.y
        main_names = [a.name for a in self.plan.attacks]
        models = {name: model_stats(cat("main", f"{name}.clean"), cat("main", f"{name}.code"), y, main_names)
                  for name in self.targets}
        if self.cfg.float_model:
            models["float"] = model_stats(cat("float", "float.clean"), cat("float", "float.code"), y,
                                          [a.name for a in self.plan.float_attacks])
        twin_clean, twin_adv = cat("main", "twin.clean"), cat("main", "twin.adv")
        agreement = {e.name: {"clean": _frac(cat("main", f"{e.name}.clean") == twin_clean),
                              "adversarial": _frac(cat("main", f"{e.name}.on_twin_adv") == twin_adv),
                              "clean_near_ties": int(cat("main", f"{e.name}.clean_tie").sum()),
                              "adversarial_near_ties": int(cat("main", f"{e.name}.adv_tie").sum())}
                     for e in self.engines}
        sweep = []
        for j, (threat, _) in enumerate(self.plan.sweep):
            names = list(self.targets) + (["float"] if self.cfg.float_model else [])
            sweep.append({"eps": threat.eps, **{n: _frac(cat(f"sweep{j}", f"{n}.code") == -1) for n in names}})
        main_scalars = [state.get(f"main/b{b}")[1] for b in range(nb)]
        queries: dict[str, dict[str, int]] = {}
        seconds: dict[str, float] = {}
        for s in main_scalars:
            for a, per in s["queries"].items():
                for t, q in per.items():
                    queries.setdefault(a, {}).setdefault(t, 0)
                    queries[a][t] += q
            for a, sec in s["seconds"].items():
                seconds[a] = seconds.get(a, 0.0) + sec
        eps1_codes = state.get("eps1")[0]
        det = state.get("determinism")[1]
        measure = {  # in target order: a resumed run reads these back from sorted JSON
            "n": len(y), "models": models, "agreement": agreement,
            "determinism": {n: det["determinism"][n] for n in self.targets},
            "probabilities": {n: det["probabilities"][n] for n in self.targets},
            "eps1": {"n": self.check_n, "acc": {n: _frac(eps1_codes[f"{n}.code"] == -1) for n in self.targets}},
            "zero_grad": _frac(cat("main", "zero_grad")),
        }
        validity = run_validity(measure, self.plan, self.cfg.validity)
        out = {
            "threat": {"norm": self.plan.threat.norm, "eps": self.plan.threat.eps, "lo": self.plan.threat.lo,
                       "hi": self.plan.threat.hi, "grid": self.plan.threat.grid},
            "attacks": [a.describe() for a in self.plan.attacks],
            "models": models, "agreement": agreement, "eps_sweep": sweep,
            "checks": {"eps1": measure["eps1"], "zero_gradient_fraction": measure["zero_grad"],
                       "determinism": measure["determinism"], "probabilities": measure["probabilities"]},
            "validity": validity, "flags": flags(validity), "queries": queries,
            "timing": {"attack_seconds": seconds},
        }
        if self.cfg.amplification:
            out["amplification"] = combine([s["amplification"] for s in main_scalars], ["twin", "float"])
        return out


def rounding_reference(twin: nn.Module):
    """The twin's QDQ graph, against which a twin/engine disagreement is judged a rounding near-tie;
    None when the twin has no QDQ form or the graph holds an op without a deviation rule."""
    from ..errors import RobustqError
    from ..export import export_model
    from ..export.reference.deviation import check_rules

    try:
        model = export_model(twin, "qdq", 21)
        check_rules(model)
    except RobustqError:
        return None
    return model


def evaluate(model: nn.Module, engines: list[DeployedClassifier], x: torch.Tensor, y: torch.Tensor, cfg: VerifyConfig,
             progress: bool = True, state: RunState | None = None) -> dict[str, Any]:
    """Attack twin, float model and engines as ``cfg`` says; resumes from ``state`` when given."""
    ev = Evaluation(build_plan(cfg), cfg, model, engines, x, y)
    state = state if state is not None else RunState(None, "")
    units = ev.units()
    bar = progress_bar(units, "verify", progress, unit="unit")
    for name, fn in bar:
        if state.done(name):
            continue
        bar.set_postfix_str(name)
        tensors, scalars = fn()
        state.put(name, tensors, scalars)
    bar.close()
    return ev.aggregate(state)


def _latency_ms(clf: DeployedClassifier, x: torch.Tensor, repeats: int = 20) -> dict[str, float]:
    """Median latency per call at batch 1 and per image at batch 64 (after warm-up)."""
    def med(fn, n):
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1e3
    b = x[:64]
    return {"batch1_ms": med(lambda: clf(x[:1]), repeats),
            "batch64_ms_per_image": med(lambda: clf(b), max(3, repeats // 4)) / max(len(b), 1)}


def verify_stage(artifact_path: str | Path, cfg: VerifyConfig, out_dir: str | Path, progress: bool = True,
                 data_dir: str | None = None) -> Any:
    """Stage 4: attack the deployed artifact; writes report.json, summary.txt, report.html and
    report.junit.xml into ``out_dir`` and records the report in the manifest. An interrupted run
    resumes from ``out_dir``'s state file."""
    build_plan(cfg)  # refuse a bad configuration before loading anything
    art = resolve_deployed(artifact_path)
    ckpt = find_ancestor(art, "checkpoint")
    if ckpt is None:
        raise ArtifactError(f"{artifact_path}: no checkpoint in its manifest lineage; verify needs the PyTorch twin")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, run_cfg = read_checkpoint(ckpt.file)
    if data_dir is not None:
        run_cfg = replace(run_cfg, **{"data.data_dir": data_dir})
    x, y, _ = load_split(run_cfg, "test")
    if cfg.limit is not None:
        x, y = x[:cfg.limit], y[:cfg.limit]
    es = deployed_engines(art, cfg.engines, cfg.batch_size, cfg.threads, cfg.device)
    out = Path(out_dir)
    fp = fingerprint({"checkpoint": ckpt.sha256, "engines": {n: a.sha256 for n, a in es.artifacts.items()},
                      "config": to_dict(cfg), "n": len(y), "dataset": run_cfg.data.dataset})
    state = RunState(out, fp).load()
    if state.discarded:
        note(f"verify: ignoring the saved state in {state.path} ({state.discarded})", progress)
    elif state.resumed_units:
        note(f"verify: resuming, {state.resumed_units} units already done ({state.path})", progress)
    result = evaluate(model, es.engines, x, y, cfg, progress, state)
    result["timing"]["latency"] = {e.name: _latency_ms(e, x) for e in es.engines}
    onnx_art = art if art.kind == "onnx" else find_ancestor(art, "onnx")
    report = {
        "schema": REPORT_SCHEMA,
        "artifact": {"path": str(art.file), "sha256": art.sha256, "kind": art.kind},
        "engines": {n: _engine_entry(a) for n, a in es.artifacts.items()},
        "checkpoint": {"path": str(ckpt.file), "sha256": ckpt.sha256},
        "device": cfg.device,
        "dataset": run_cfg.data.dataset, "n": len(y),
        **result,
        "deployed": [e.name for e in es.engines],
        "missing_engines": es.missing,
        "size": onnx_art.meta.get("size", {}) if onnx_art else {},
        "config": to_dict(cfg),
    }
    from ..certify.report import add_certification

    add_certification(report, cfg, onnx_art, x, y, state, es.engines, progress)
    _write_outputs(report, out)
    state.remove()
    return Manifest.load(out).add(out / REPORT_NAME, "report", "verify", parents=[art, ckpt], config=to_dict(cfg),
                                  meta={"summary": SUMMARY_NAME, "html": HTML_NAME, "junit": JUNIT_NAME})


def _engine_entry(a: Artifact) -> dict[str, Any]:
    """An engine's artifact in the report; for an accelerator target also where each layer ran
    (from the cost report the compile stage recorded)."""
    entry: dict[str, Any] = {"path": str(a.file), "sha256": a.sha256, "kind": a.kind}
    accel = a.meta.get("accel") if a.meta else None
    if accel:
        cost = accel["cost"]
        entry["placement"] = {
            "accelerator": cost["accelerator"].get("name", accel.get("preset")),
            "cycles_per_image": cost["totals"]["cycles"],
            "layers": [{"layer": layer["name"], "placement": layer["placement"], "op": layer.get("op", ""),
                        "cycles": layer.get("cycles"), "reasons": layer.get("reasons", [])}
                       for layer in cost["layers"]],
        }
    return entry


def _write_outputs(report: dict[str, Any], out: Path) -> None:
    from .check import junit_xml, validity_results
    from .html import render_html

    atomic_write_text(out / REPORT_NAME, dumps_json(report))
    atomic_write_text(out / SUMMARY_NAME, summary_text(report))
    atomic_write_text(out / HTML_NAME, render_html(report))
    atomic_write_text(out / JUNIT_NAME, junit_xml(validity_results(report), suite="robustq.verify"))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def summary_text(report: dict[str, Any]) -> str:
    """A readable table: clean / robust accuracy per model and attack, agreement, validity, latency."""
    th = report["threat"]
    names = [a["name"] for a in report["attacks"]]
    lines = [f"robustq verify: {report['dataset']} test split, n={report['n']}, {th['norm']} eps={th['eps']:g} "
             f"(inputs on the uint8 grid), attacks run in order on points still robust: {', '.join(names)}", ""]
    head = f"{'model':<18}{'clean':>8}" + "".join(f"{'+' + n:>12}" for n in names) + f"{'worst case':>12}"
    lines += [head, "-" * len(head)]
    for name, m in report["models"].items():
        ra = m["robust_acc"]
        lines.append(f"{name:<18}{_pct(m['clean_acc']):>8}" + "".join(f"{_pct(ra.get(n)):>12}" for n in names)
                     + f"{_pct(ra['worst_case']):>12}")
    if report["agreement"]:
        def ties(a: dict) -> str:
            n = a.get("clean_near_ties", 0) + a.get("adversarial_near_ties", 0)
            return f" ({n} rounding near-tie{'s' if n != 1 else ''})" if n else ""
        lines += ["", "agreement with the twin (argmax): " + "; ".join(
            f"{e} clean {a['clean']:.4f}, adversarial {a['adversarial']:.4f}{ties(a)}"
            for e, a in report["agreement"].items())]
    lat = report.get("timing", {}).get("latency", {})
    if lat:
        lines.append("latency: " + "; ".join(f"{e} {v['batch1_ms']:.3f} ms at batch 1, {v['batch64_ms_per_image']:.4f} ms/img at batch 64"
                                              for e, v in lat.items()))
    size = report.get("size") or {}
    if size:
        lines.append(f"weights: float32 {size['float_bytes']:,} bytes, quantized {size['quantized_bytes']:,} bytes "
                     f"({size['float_bytes'] / max(size['quantized_bytes'], 1):.2f}x smaller)")
    for row in report.get("eps_sweep", []):
        lines.append(f"eps {row['eps']:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "eps"))
    for sel, why in report.get("missing_engines", {}).items():
        lines.append(f"NOT VERIFIED {sel}: {why}")
    lines.append("")
    for r in report.get("validity", []):
        lines.append(f"{r['status'].upper():<5} {r['message']}")
    return "\n".join(lines) + "\n"
