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
import onnx
import torch
from torch import nn

from ..attacks import run_ensemble
from ..attacks.checks import looks_like_probabilities, repeat_difference, zero_gradient_mask
from ..config import VerifyConfig, to_dict
from ..errors import ConfigError
from ..manifest import Artifact, atomic_write_text, dumps_json, ensure_writable, publishing, sha256_file
from ..progress import bar as progress_bar, note
from ..twin import input_spec, load_model
from .amplification import amplification_sums, combine
from .data import test_points
from .engines import PIXEL_LEVELS, DeployedClassifier, deployed_engines, float_view, resolve_deployed
from .facts import example_images, graph_summary, wilson
from .models import TWIN_NAMES, Models, check_runs, load_models
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
    """The units of one verification and their aggregation.

    ``twins`` are the differentiable twins scored as targets (``twin``: the checkpoint's,
    ``onnx-twin``: the ONNX graph's); ``primary`` names the one white-box attacks differentiate
    and deployed engines are compared with."""

    def __init__(self, plan: Plan, cfg: VerifyConfig, twins: dict[str, nn.Module], engines: list[DeployedClassifier],
                 x: torch.Tensor, y: torch.Tensor, primary: str = "twin", surrogate: nn.Module | None = None,
                 reference: tuple[Any, Any] | None = None, attack_twins: dict[str, nn.Module] | None = None):
        self.plan, self.cfg, self.x, self.y = plan, cfg, x, y
        self.twins = {n: m.eval() for n, m in twins.items()}
        self.primary = primary
        attack_twins = {n: m.eval() for n, m in (attack_twins or self.twins).items()}
        self.twin = attack_twins[primary]  # what white-box attacks differentiate
        ckpt = self.twins.get("twin")
        self.reference = reference if reference is not None else _checkpoint_reference(ckpt)
        self.flt = float_view(ckpt) if ckpt is not None and cfg.float_model else None
        self.amplify = cfg.amplification and ckpt is not None
        self.engines = engines
        self.targets: dict[str, Callable] = {**self.twins, **{e.name: e for e in engines}}
        self.label_only = {e.name for e in engines if e.label_only}
        if self.label_only and not any(a.outputs == "labels" for a in plan.attacks):
            if plan.decision is None:
                raise ConfigError(f"{', '.join(sorted(self.label_only))} return labels only, and no label-only "
                                  f"attack covers {plan.threat.norm} threats; verify them under linf")
            plan.attacks = plan.attacks + [plan.decision]  # what can still query a label-only engine
        self.sources: dict[str, nn.Module] = {"white-box": self.twin, **attack_twins}
        if self.flt is not None:
            self.sources["float"] = self.flt
        if surrogate is not None:
            self.sources["surrogate"] = surrogate.eval()
        self.sources["auto"] = self.sources.get("surrogate", self.sources.get("float", self.twin))
        # query attacks target what is deployed (the twin only when nothing is); their examples
        # are still scored on the twin
        self.query_targets = tuple(e.name for e in engines) or (primary,)
        self.float_sources = {**self.sources, "white-box": self.flt} if self.flt is not None else {}
        self.batches = list(range(0, len(y), cfg.batch_size))
        self.check_n = min(cfg.validity.points, len(y))

    def source_name(self, attack) -> str | None:
        """The model an attack crafted its examples on, by name (None: each queried engine)."""
        if attack.access == "query":
            return None
        src = self.sources.get(attack.source)
        if attack.source == "white-box":
            return self.primary
        return next((n for n, m in self.sources.items() if m is src and n not in ("auto", "white-box")), attack.source)

    def _batch(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[start:start + self.cfg.batch_size], self.y[start:start + self.cfg.batch_size]

    def _gen(self, unit: str) -> Callable[[str], torch.Generator]:
        return lambda key: seeded_generator(self.cfg.seed, unit, key)

    # ------------------------------------------------------------------ units

    def units(self) -> list[tuple[str, Callable[[], Unit]]]:
        out: list[tuple[str, Callable[[], Unit]]] = [("determinism", self.determinism_unit), ("eps1", self.eps1_unit)]
        for b, s in enumerate(self.batches):
            out.append((f"main/b{b}", lambda s=s, b=b: self.main_unit(f"main/b{b}", s)))
            if self.flt is not None:
                out.append((f"float/b{b}", lambda s=s, b=b: self.float_unit(f"float/b{b}", s)))
            for j in range(len(self.plan.sweep)):
                out.append((f"sweep{j}/b{b}", lambda s=s, b=b, j=j: self.sweep_unit(f"sweep{j}/b{b}", j, s)))
        return out

    def main_unit(self, unit: str, start: int) -> Unit:
        xb, yb = self._batch(start)
        res = run_ensemble(self.plan.attacks, self.sources, self.targets, xb, yb, self.plan.threat, self._gen(unit),
                           self.query_targets, self.label_only)
        t: dict[str, torch.Tensor] = {}
        for name in self.targets:
            t[f"{name}.clean"], t[f"{name}.adv"], t[f"{name}.code"] = res.clean_pred[name], res.adv_pred[name], res.code[name]
        x_twin = res.x_worst[self.primary]
        for e in self.engines:
            t[f"{e.name}.on_twin_adv"] = e.predict(x_twin)
            t[f"{e.name}.clean_tie"] = self._near_ties(xb, t[f"{e.name}.clean"] != t[f"{self.primary}.clean"])
            t[f"{e.name}.adv_tie"] = self._near_ties(x_twin, t[f"{e.name}.on_twin_adv"] != res.adv_pred[self.primary])
            t[f"{e.name}.x_worst"] = torch.round(res.x_worst[e.name] * PIXEL_LEVELS).to(torch.uint8)
        t["zero_grad"] = zero_gradient_mask(self.twin, xb, yb)
        scalars: dict[str, Any] = {"queries": res.queries, "seconds": res.seconds}
        if self.amplify:
            models = {"twin": self.twins["twin"], "float": self.flt if self.flt is not None else float_view(self.twins["twin"])}
            scalars["amplification"] = amplification_sums(models, xb, res.x_worst["twin"], self.plan.threat,
                                                          self._gen(unit)("amplification"))
        return t, scalars

    def _near_ties(self, x: torch.Tensor, disagree: torch.Tensor) -> torch.Tensor:
        """Of the points where twin and an engine disagree, those where rounding near-ties alone can
        change the winning class (:func:`robustq_deploy.export.reference.deviation.argmax_may_differ`
        on the QDQ reference graph: the checkpoint twin's QDQ export, or the deployed QDQ graph
        itself): both are then right. All False without a reference graph."""
        out = torch.zeros_like(disagree)
        if self.reference is None or not bool(disagree.any()):
            return out
        from ..export.reference import ReferenceSession
        from ..export.reference.deviation import argmax_may_differ, rounding_deviation

        model, spec = self.reference
        rows = disagree.nonzero().flatten()
        sess = ReferenceSession(model)
        feeds = {sess.input_names[0]: spec.feed(x[rows])}
        (logits,) = sess.run(None, feeds)
        (bound,) = rounding_deviation(model, feeds).values()
        out[rows] = torch.from_numpy(argmax_may_differ(np.asarray(logits).reshape(len(rows), -1),
                                                       np.asarray(bound).reshape(len(rows), -1)))
        return out

    def float_unit(self, unit: str, start: int) -> Unit:
        xb, yb = self._batch(start)
        res = run_ensemble(self.plan.float_attacks, self.float_sources, {"float": self.flt}, xb, yb,
                           self.plan.threat, self._gen(unit))
        return {"float.clean": res.clean_pred["float"], "float.code": res.code["float"]}, {}

    def sweep_unit(self, unit: str, j: int, start: int) -> Unit:
        threat, attacks = self.plan.sweep[j]
        xb, yb = self._batch(start)
        res = run_ensemble(attacks, self.sources, self.targets, xb, yb, threat, self._gen(unit), self.query_targets,
                           self.label_only)
        t = {f"{name}.code": res.code[name] for name in self.targets}
        if self.flt is not None:
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
        if self.flt is not None:
            models["float"] = model_stats(cat("float", "float.clean"), cat("float", "float.code"), y,
                                          [a.name for a in self.plan.float_attacks])
        for name, m in models.items():
            m["ci95"] = {k: wilson(round(v * len(y)), len(y)) for k, v in
                         (("clean", m["clean_acc"]), ("worst_case", m["robust_acc"]["worst_case"]))}
        p = self.primary
        twin_clean, twin_adv = cat("main", f"{p}.clean"), cat("main", f"{p}.adv")
        agreement = {e.name: {"clean": _frac(cat("main", f"{e.name}.clean") == twin_clean),
                              "adversarial": _frac(cat("main", f"{e.name}.on_twin_adv") == twin_adv),
                              "clean_near_ties": int(cat("main", f"{e.name}.clean_tie").sum()),
                              "adversarial_near_ties": int(cat("main", f"{e.name}.adv_tie").sum())}
                     for e in self.engines}
        sweep = []
        for j, (threat, _) in enumerate(self.plan.sweep):
            names = list(self.targets) + (["float"] if self.flt is not None else [])
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
        one_class = {}
        for name in self.targets:
            pred = cat("main", f"{name}.clean")
            one_class[name] = (float(torch.bincount(pred).max()) / len(pred)) if len(pred) else 0.0
        measure = {  # in target order: a resumed run reads these back from sorted JSON
            "n": len(y), "models": models, "agreement": agreement, "eps_sweep": sweep, "eps": self.plan.threat.eps,
            "determinism": {n: det["determinism"][n] for n in self.targets},
            "probabilities": {n: det["probabilities"][n] for n in self.targets},
            "eps1": {"n": self.check_n, "acc": {n: _frac(eps1_codes[f"{n}.code"] == -1) for n in self.targets}},
            "zero_grad": _frac(cat("main", "zero_grad")), "one_class": one_class, "primary": p,
        }
        validity = run_validity(measure, self.plan, self.cfg.validity)
        out = {
            "threat": {"norm": self.plan.threat.norm, "eps": self.plan.threat.eps, "lo": self.plan.threat.lo,
                       "hi": self.plan.threat.hi, "grid": self.plan.threat.grid},
            "attacks": [{**a.describe(), "crafted_on": self.source_name(a)} for a in self.plan.attacks],
            "models": models, "agreement": agreement, "eps_sweep": sweep,
            "checks": {"eps1": measure["eps1"], "zero_gradient_fraction": measure["zero_grad"],
                       "determinism": measure["determinism"], "probabilities": measure["probabilities"],
                       "one_class_fraction": one_class},
            "validity": validity, "flags": flags(validity), "queries": queries,
            "timing": {"attack_seconds": seconds},
            "examples": self.examples(cat),
        }
        if self.amplify:
            out["amplification"] = combine([s["amplification"] for s in main_scalars], ["twin", "float"])
        return out

    def examples(self, cat: Callable[[str, str], torch.Tensor]) -> dict[str, list[dict[str, Any]]]:
        """A few points each engine lost to an attack, with the images (see :mod:`.facts`)."""
        out = {}
        for e in self.engines:
            code = cat("main", f"{e.name}.code")
            rows = (code > 0).nonzero().flatten()[:self.cfg.examples].tolist()
            if not rows:
                continue
            x_adv = cat("main", f"{e.name}.x_worst").to(torch.float32) / PIXEL_LEVELS
            out[e.name] = example_images(self.x, x_adv, self.y, cat("main", f"{e.name}.clean"),
                                         cat("main", f"{e.name}.adv"), rows, self.plan.threat.eps)
        return out


def _checkpoint_reference(twin: nn.Module | None):
    """The checkpoint twin's QDQ export and its input, as the near-tie reference (or None)."""
    if twin is None:
        return None
    model = rounding_reference(twin)
    return None if model is None else (model, input_spec(model))


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


def graph_reference(model: onnx.ModelProto, spec) -> tuple[onnx.ModelProto, Any] | None:
    """A deployed QDQ graph as its own near-tie reference (None when an op has no deviation rule,
    e.g. an integer graph, whose engines are compared bit for bit)."""
    from ..errors import RobustqError
    from ..export.reference.deviation import check_rules
    from ..export.reference.session import ReferenceSession

    try:
        check_rules(model)
        ReferenceSession(model)
    except RobustqError:
        return None
    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return None
    return model, spec


def evaluate(model: nn.Module | None, engines: list[DeployedClassifier], x: torch.Tensor, y: torch.Tensor,
             cfg: VerifyConfig, progress: bool = True, state: RunState | None = None,
             onnx_twin: nn.Module | None = None, primary: str | None = None, surrogate: nn.Module | None = None,
             reference: tuple[Any, Any] | None = None, onnx_attack: nn.Module | None = None) -> dict[str, Any]:
    """Attack twins, float model and engines as ``cfg`` says; resumes from ``state`` when given.
    ``model`` is the checkpoint twin (or None), ``onnx_twin`` the ONNX graph's twin (or None) and
    ``onnx_attack`` the version of it attacks differentiate (default: the same)."""
    twins = {n: m for n, m in (("twin", model), ("onnx-twin", onnx_twin)) if m is not None}
    attack_twins = {**twins, **({"onnx-twin": onnx_attack} if onnx_attack is not None else {})}
    primary = primary or ("twin" if model is not None else "onnx-twin")
    ev = Evaluation(build_plan(cfg), cfg, twins, engines, x, y, primary, surrogate, reference, attack_twins)
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
    if clf.emulated:  # an emulator or simulator: a few calls say enough, each costs a process start
        repeats = 3
    return {"batch1_ms": med(lambda: clf(x[:1]), repeats),
            "batch64_ms_per_image": med(lambda: clf(b), max(3, repeats // 4)) / max(len(b), 1)}


def _engine_threads(e: DeployedClassifier, cfg: VerifyConfig) -> dict[str, Any]:
    """How many threads ran an engine's inference (what its latency was measured with)."""
    import os

    cores = os.cpu_count() or 1
    if e.runner.engine == "onnxruntime":
        return {"threads": cfg.threads or cores, "source": "verify.threads" if cfg.threads else "onnxruntime default"}
    if cfg.device is not None:
        return {"threads": None, "source": f"the device at {cfg.device}"}
    env = os.environ.get("TVM_NUM_THREADS")
    return {"threads": int(env) if env else cores, "source": "TVM_NUM_THREADS" if env else "TVM runtime default"}


def _model_facts(models: Models, cfg: VerifyConfig) -> dict[str, Any]:
    from ..manifest import tool_versions

    facts: dict[str, Any] = {
        "source": "trained by robustq (checkpoint in the lineage)" if models.checkpoint is not None
        else "not trained by robustq (no checkpoint in the lineage)",
        "white_box_twin": models.primary, "twins": {n: TWIN_NAMES[n] for n in models.twins()},
        "tools": tool_versions(),
    }
    if models.onnx is not None:
        model = load_model(models.onnx.file)
        facts["onnx"] = {"path": str(models.onnx.file), "sha256": models.onnx.sha256,
                         "external": models.onnx.stage == "external", **graph_summary(model),
                         "input": models.spec.describe() if models.spec else None,
                         "output": models.onnx_twin.output_kind if models.onnx_twin is not None else None}
    if models.onnx_note:
        facts["onnx_twin_unavailable"] = models.onnx_note
    if models.checkpoint is not None:
        rc = models.run_cfg
        facts["checkpoint"] = {"path": str(models.checkpoint.file), "sha256": models.checkpoint.sha256,
                               "arch": rc.model.arch, "method": rc.train.method,
                               "bits": {"weights": rc.quant.weight_bits, "activations": rc.quant.act_bits},
                               "tools": models.checkpoint.tools}
        facts["method"] = rc.train.method
    else:
        facts["method"] = "unknown (not trained by robustq)"
    if models.surrogate_info:
        facts["surrogate"] = models.surrogate_info
    return facts


def verify_stage(artifact_path: str | Path, cfg: VerifyConfig, out_dir: str | Path, progress: bool = True,
                 data_dir: str | None = None, data_path: str | None = None, model: Any = None,
                 model_kwargs: dict[str, Any] | None = None) -> Any:
    """Stage 4: attack the deployed artifact; writes report.json, summary.txt, report.html and
    report.junit.xml into ``out_dir`` and records the report in the manifest. An interrupted run
    resumes from ``out_dir``'s state file.

    ``artifact_path``: an ONNX file (recorded by robustq or not), a compiled library recorded in a
    manifest, or an artifact folder; the white-box twin is the checkpoint's or the ONNX graph's
    (:mod:`.models`); the test data come from ``cfg.dataset``, ``data_path`` (an .npz file or an
    image folder) or the checkpoint (:mod:`.data`). ``model`` (with ``model_kwargs``) names the
    factory or float module of the user's own model (:func:`robustq_deploy.train.read_checkpoint`)."""
    build_plan(cfg)  # refuse a bad configuration before loading anything
    art = resolve_deployed(artifact_path)
    out = ensure_writable(out_dir, create=False)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    models = load_models(art, cfg, model, model_kwargs)
    data = test_points(cfg.dataset, data_dir, cfg.limit, models.run_cfg, data_path)
    if models.spec is not None:
        models.spec.check(data.chw, data.name)
    for name, m in (*models.twins().items(), ("surrogate", models.surrogate)):
        if m is not None:
            check_runs(m, data.x, f"the {name} ({models.surrogate_info.get('path', '')})" if name == "surrogate"
                       else f"the {name}", data.name)
    x, y = data.x, data.y
    folder = Path(artifact_path) if Path(artifact_path).is_dir() else None  # a folder: its libraries
    es = deployed_engines(art, cfg.engines, cfg.batch_size, cfg.threads, cfg.device, models.spec, data.num_classes,
                          folder)
    fp = fingerprint({"checkpoint": models.checkpoint.sha256 if models.checkpoint else None,
                      "onnx": models.onnx.sha256 if models.onnx else None,
                      "surrogate": models.surrogate_info.get("sha256"),
                      "engines": {n: a.sha256 for n, a in es.artifacts.items()},
                      "config": to_dict(cfg), "n": len(y), "dataset": data.name})
    state = RunState(out, fp).load()
    if state.discarded:
        note(f"verify: ignoring the saved state in {state.path} ({state.discarded})", progress)
    elif state.resumed_units:
        note(f"verify: resuming, {state.resumed_units} units already done ({state.path})", progress)
    reference = None
    if models.twin is None and models.onnx_twin is not None:
        reference = graph_reference(models.onnx_twin.model, models.spec)
    result = evaluate(models.twin, es.engines, x, y, cfg, progress, state, models.onnx_twin, models.primary,
                      models.surrogate, reference, models.onnx_fast)
    result["timing"]["latency"] = {e.name: {**_latency_ms(e, x), **_engine_threads(e, cfg), "emulated": e.emulated}
                                   for e in es.engines}
    onnx_art = models.onnx
    report = {
        "schema": REPORT_SCHEMA,
        "artifact": {"path": str(art.file), "sha256": art.sha256, "kind": art.kind},
        "engines": {n: _engine_entry(a) for n, a in es.artifacts.items()},
        "checkpoint": {"path": str(models.checkpoint.file), "sha256": models.checkpoint.sha256}
        if models.checkpoint is not None else None,
        "model": _model_facts(models, cfg),
        "white_box_twin": models.primary,
        "device": cfg.device,
        "dataset": data.name, "n": len(y),
        **result,
        "deployed": [e.name for e in es.engines],
        "label_only": [e.name for e in es.engines if e.label_only],
        "missing_engines": es.missing,
        "size": onnx_art.meta.get("size", {}) if onnx_art else {},
        "config": to_dict(cfg),
    }
    from ..certify.report import add_certification

    add_certification(report, cfg, onnx_art, x, y, state, es.engines, progress)
    report["verdict"] = _verdict(report)
    with publishing(out) as pub:  # the four files and their entry appear together, manifest last
        _write_outputs(report, out)
        views = {key: {"path": name, "sha256": sha256_file(pub.staged_path(out / name))}
                 for key, name in (("summary", SUMMARY_NAME), ("html", HTML_NAME), ("junit", JUNIT_NAME))}
        pub.record(out / REPORT_NAME, "report", "verify", parents=[a for a in (art, models.checkpoint) if a is not None],
                   config=to_dict(cfg), meta={**{k: v["path"] for k, v in views.items()}, "files": views})
    state.remove()
    return pub.artifacts[out / REPORT_NAME]


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    """What ``robustq check`` says of the report without thresholds: its validity checks."""
    from ..config import CheckConfig
    from .check import run_checks

    results = run_checks(report, CheckConfig())
    return {"passed": all(r["passed"] for r in results),
            "failed": [r["name"] for r in results if not r["passed"]],
            "skipped": [r["name"] for r in results if r.get("skipped")]}


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


def _ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci95") or {}).get(key)
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def summary_text(report: dict[str, Any]) -> str:
    """A readable table: clean / robust accuracy per model and attack, agreement, validity, latency."""
    th = report["threat"]
    names = [a["name"] for a in report["attacks"]]
    lines = [f"robustq verify: {report['dataset']} test split, n={report['n']}, {th['norm']} eps={th['eps']:g} "
             f"(inputs on the uint8 grid), attacks run in order on points still robust: {', '.join(names)}"]
    crafted = [f"{a['name']} on {a['crafted_on']}" for a in report["attacks"] if a.get("crafted_on")]
    if crafted:
        lines.append("white-box and transfer attacks crafted on: " + ", ".join(crafted)
                     + "; query attacks query each deployed engine")
    lines.append("")
    head = (f"{'model':<18}{'clean':>8}" + "".join(f"{'+' + n:>12}" for n in names) + f"{'worst case':>12}"
            + f"{'95% CI (clean)':>18}{'95% CI (worst)':>18}")
    lines += [head, "-" * len(head)]
    for name, m in report["models"].items():
        ra = m["robust_acc"]
        lines.append(f"{name:<18}{_pct(m['clean_acc']):>8}" + "".join(f"{_pct(ra.get(n)):>12}" for n in names)
                     + f"{_pct(ra['worst_case']):>12}{_ci(m, 'clean'):>18}{_ci(m, 'worst_case'):>18}")
    if report["agreement"]:
        def ties(a: dict) -> str:
            n = a.get("clean_near_ties", 0) + a.get("adversarial_near_ties", 0)
            return f" ({n} rounding near-tie{'s' if n != 1 else ''})" if n else ""
        lines += ["", f"agreement with the {report.get('white_box_twin', 'twin')} (argmax): " + "; ".join(
            f"{e} clean {a['clean']:.4f}, adversarial {a['adversarial']:.4f}{ties(a)}"
            for e, a in report["agreement"].items())]
    lat = report.get("timing", {}).get("latency", {})
    if lat:
        def thr(v: dict) -> str:
            t = v.get("threads")
            return (f", {t} thread{'s' if t != 1 else ''}" if t else "") + (f", {v['emulated']}" if v.get("emulated") else "")
        lines.append("latency: " + "; ".join(f"{e} {v['batch1_ms']:.3f} ms at batch 1, {v['batch64_ms_per_image']:.4f} "
                                              f"ms/img at batch 64{thr(v)}" for e, v in lat.items()))
    size = report.get("size") or {}
    if size:
        lines.append(f"weights: float32 {size['float_bytes']:,} bytes, quantized {size['quantized_bytes']:,} bytes "
                     f"({size['float_bytes'] / max(size['quantized_bytes'], 1):.2f}x smaller)")
    for row in report.get("eps_sweep", []):
        lines.append(f"eps {row['eps']:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "eps"))
    for sel, why in report.get("missing_engines", {}).items():
        lines.append(f"NOT VERIFIED {sel}: {why}")
    for e in report.get("label_only", []):
        lines.append(f"{e} returns labels only: score-based query attacks did not run on it (decision-based rays did)")
    lines.append("")
    skipped = [r for r in report.get("validity", []) if r["status"] == "skip"]
    for r in skipped:
        lines.append(f"SKIPPED CHECK {r['name']}: {r['message']}")
    for r in report.get("validity", []):
        lines.append(f"{r['status'].upper():<5} {r['message']}")
    v = report.get("verdict")
    if v is not None:
        lines.append(f"check (validity, no thresholds): {'PASS' if v['passed'] else 'FAIL'}"
                     + (f"; skipped: {', '.join(v['skipped'])}" if v["skipped"] else ""))
    return "\n".join(lines) + "\n"
