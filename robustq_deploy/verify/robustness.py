"""Robustness of the twin and of the deployed artifact on the test split.

The twin (fake-quant PyTorch model with straight-through gradients) is attacked white-box with
PGD; the adversarial inputs are rounded to the deployed input grid (uint8 pixels) and replayed on
every deployed engine, so robust accuracy is measured on what actually runs. Agreement of argmax
between twin and deployed model is reported on clean and adversarial inputs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks import ThreatModel, pgd
from ..config import VerifyConfig, to_dict
from ..errors import ArtifactError
from ..progress import bar as progress_bar
from ..manifest import Manifest, atomic_write_text, dumps_json, find_ancestor
from ..train.loop import load_split, read_checkpoint
from .engines import DeployedClassifier, deployed_engines, resolve_deployed

REPORT_NAME = "report.json"
SUMMARY_NAME = "summary.txt"


@torch.no_grad()
def _twin_logits(model, x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)]) if len(x) else torch.zeros(0)


def attack_twin(model, x, y, threat: ThreatModel, cfg: VerifyConfig, progress: bool) -> torch.Tensor:
    """White-box PGD on the twin, in batches, rounded to the deployed input grid."""
    gen = torch.Generator().manual_seed(cfg.seed)
    out = []
    bar = progress_bar(range(0, len(x), cfg.batch_size), f"pgd eps={threat.eps:g}", progress, unit="batch")
    for i in bar:
        xb, yb = x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]
        adv = pgd(model, xb, yb, threat, steps=cfg.steps, step_size=cfg.step_size, restarts=cfg.restarts, generator=gen)
        out.append(threat.to_grid(adv, xb))
    bar.close()
    return torch.cat(out)


def _latency_ms(clf: DeployedClassifier, x: torch.Tensor, repeats: int = 20) -> dict[str, float]:
    """Median latency per call at batch 1 and per image at the full batch (after warm-up)."""
    def med(fn, n):
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1e3
    one = x[:1]
    b = x[:64]
    return {"batch1_ms": med(lambda: clf(one), repeats), "batch64_ms_per_image": med(lambda: clf(b), max(3, repeats // 4)) / len(b)}


def evaluate(model, engines: list[DeployedClassifier], x, y, cfg: VerifyConfig, progress: bool = True) -> dict[str, Any]:
    """Clean and PGD robust accuracy of twin and engines, agreement, eps sweep."""
    threat = ThreatModel("linf", cfg.eps)
    models: dict[str, Any] = {}
    agreement: dict[str, Any] = {}
    twin_clean = _twin_logits(model, x, cfg.batch_size).argmax(1)
    x_adv = attack_twin(model, x, y, threat, cfg, progress)
    twin_adv = _twin_logits(model, x_adv, cfg.batch_size).argmax(1)

    def acc(pred):
        return float((pred == y).float().mean()) if len(y) else 0.0

    models["twin"] = {"clean_acc": acc(twin_clean), "robust_acc": {"pgd": acc(twin_adv), "worst_case": float(((twin_adv == y) & (twin_clean == y)).float().mean())}}
    for clf in engines:
        clean = clf.predict(x)
        adv = clf.predict(x_adv)
        robust = (clean == y) & (adv == y)
        models[clf.name] = {"clean_acc": acc(clean), "robust_acc": {"pgd-transfer-from-twin": acc(adv), "worst_case": float(robust.float().mean())}}
        agreement[clf.name] = {"clean": float((clean == twin_clean).float().mean()), "adversarial": float((adv == twin_adv).float().mean())}
    sweep = []
    for eps in cfg.eps_sweep:
        t = ThreatModel("linf", eps)
        xa = attack_twin(model, x, y, t, cfg, progress)
        row = {"eps": eps, "twin": acc(_twin_logits(model, xa, cfg.batch_size).argmax(1))}
        for clf in engines:
            row[clf.name] = acc(clf.predict(xa))
        sweep.append(row)
    return {"threat": {"norm": "linf", "eps": cfg.eps, "grid": threat.grid}, "models": models,
            "agreement": agreement, "eps_sweep": sweep}


def verify_stage(artifact_path: str | Path, cfg: VerifyConfig, out_dir: str | Path, progress: bool = True,
                 data_dir: str | None = None) -> Any:
    """Stage 4: attack the twin, score the deployed engines, write ``report.json`` + summary."""
    art = resolve_deployed(artifact_path)
    ckpt = find_ancestor(art, "checkpoint")
    if ckpt is None:
        raise ArtifactError(f"{artifact_path}: no checkpoint in its manifest lineage; verify needs the PyTorch twin")
    model, run_cfg = read_checkpoint(ckpt.file)
    if data_dir is not None:
        from ..config import replace
        run_cfg = replace(run_cfg, **{"data.data_dir": data_dir})
    x, y, _ = load_split(run_cfg, "test")
    if cfg.limit is not None:
        x, y = x[:cfg.limit], y[:cfg.limit]
    engines = deployed_engines(art, cfg.engines, cfg.batch_size)
    result = evaluate(model, engines, x, y, cfg, progress)
    onnx_art = art if art.kind == "onnx" else find_ancestor(art, "onnx")
    report = {
        "schema": 1,
        "artifact": {"path": str(art.file), "sha256": art.sha256, "kind": art.kind},
        "dataset": run_cfg.data.dataset, "n": len(y), "attacks": list(cfg.attacks),
        **result,
        "deployed": [e.name for e in engines],
        "size": onnx_art.meta.get("size", {}) if onnx_art else {},
        "latency": {e.name: _latency_ms(e, x) for e in engines},
        "flags": [],
        "config": to_dict(cfg),
    }
    out = Path(out_dir)
    atomic_write_text(out / REPORT_NAME, dumps_json(report))
    atomic_write_text(out / SUMMARY_NAME, summary_text(report))
    parents = [art, ckpt]
    return Manifest.load(out).add(out / REPORT_NAME, "report", "verify", parents=parents, config=to_dict(cfg),
                                  meta={"summary": SUMMARY_NAME})


def summary_text(report: dict[str, Any]) -> str:
    """A readable table: accuracy, robust accuracy, agreement, latency, model bytes."""
    eps = report["threat"]["eps"]
    lines = [f"robustq verify: {report['dataset']} test split, n={report['n']}, L-inf eps={eps:g} (PGD, inputs on the uint8 grid)", ""]
    head = f"{'model':<16}{'clean acc':>11}{'robust acc':>12}{'agree clean':>13}{'agree adv':>11}{'ms/img b1':>11}{'ms/img b64':>12}"
    lines += [head, "-" * len(head)]
    for name, m in report["models"].items():
        ag = report["agreement"].get(name, {})
        lat = report.get("latency", {}).get(name, {})
        def f(v, w, fmt):
            return f"{v:{w}{fmt}}" if v is not None else f"{'-':>{w}}"
        lines.append(f"{name:<16}{f(m['clean_acc'], 11, '.4f')}{f(m['robust_acc'].get('worst_case'), 12, '.4f')}"
                     f"{f(ag.get('clean'), 13, '.4f')}{f(ag.get('adversarial'), 11, '.4f')}"
                     f"{f(lat.get('batch1_ms'), 11, '.3f')}{f(lat.get('batch64_ms_per_image'), 12, '.4f')}")
    size = report.get("size") or {}
    if size:
        lines += ["", f"weights: float32 {size['float_bytes']:,} bytes, quantized {size['quantized_bytes']:,} bytes "
                      f"({size['float_bytes'] / max(size['quantized_bytes'], 1):.2f}x smaller)"]
    for row in report.get("eps_sweep", []):
        lines.append("eps sweep " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) and k != "eps" else f"{k}={v}" for k, v in row.items()))
    for flag in report.get("flags", []):
        lines.append(f"FLAG {flag['name']}: {flag['message']}")
    return "\n".join(lines) + "\n"
