"""Per-layer error amplification of the twin and the float model, as verify reports it.

For each conv / linear layer ``l``: ``mean ||f_l(x + d) - f_l(x)|| / ||d||`` (the measure of
:func:`robustq_deploy.quant.analysis.error_amplification`, shared with training diagnostics),
for two perturbations of the same points: ``d`` = the twin's worst-case adversarial perturbation
(as scored, on the input grid) and ``d`` = a random vertex of the threat ball of the same radius.
Both models get the same ``d``, so the curves isolate what quantization does to a perturbation.
Results are kept as per-layer sums and counts so batches (and resumed runs) add up exactly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks import ThreatModel
from ..attacks.threat import per_point
from ..quant.analysis import error_amplification

KINDS = ("adversarial", "random")


def random_vertex(x: torch.Tensor, threat: ThreatModel, generator: torch.Generator) -> torch.Tensor:
    """``x`` moved to a random point on the ball's boundary (random signs for L-inf, a random
    direction for L2), kept in the box and on the input grid."""
    if threat.norm == "linf":
        d = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x.dtype) * threat.eps
    else:
        d = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        d = d / per_point(d.flatten(1).norm(dim=1).clamp(min=1e-12), x.ndim) * threat.eps
    return threat.to_grid(threat.project(x + d, x), x)


def amplification_sums(models: dict[str, nn.Module], x: torch.Tensor, x_adv: torch.Tensor,
                       threat: ThreatModel, generator: torch.Generator) -> dict[str, Any]:
    """``{"layers": [...], "<model>.<kind>": [sum of ratios per layer], "count.<kind>": n}``;
    points whose perturbation is zero (misclassified clean, nothing to attack) are left out."""
    out: dict[str, Any] = {}
    perturbed = {"adversarial": x_adv, "random": random_vertex(x, threat, generator)}
    for kind in KINDS:
        delta = perturbed[kind] - x
        keep = delta.flatten(1).abs().amax(1) > 0
        out[f"count.{kind}"] = int(keep.sum())
        for name, model in models.items():
            rows = error_amplification(model, x[keep], delta[keep]) if bool(keep.any()) else []
            out.setdefault("layers", [r["layer"] for r in rows])
            out[f"{name}.{kind}"] = [r["ratio"] * int(keep.sum()) for r in rows]
    return out


def combine(parts: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    """Means over all batches: ``{"layers", "<model>": {"adversarial": [...], "random": [...]}}``."""
    layers = next((p["layers"] for p in parts if p.get("layers")), [])
    res: dict[str, Any] = {"layers": layers, "n": {k: sum(p[f"count.{k}"] for p in parts) for k in KINDS}}
    for name in models:
        res[name] = {}
        for kind in KINDS:
            n = res["n"][kind]
            sums = [sum(p[f"{name}.{kind}"][i] for p in parts if p[f"{name}.{kind}"]) for i in range(len(layers))]
            res[name][kind] = [s / n for s in sums] if n else []
    return res
