"""AutoAttack-style ensemble: each attack runs only on points still robust, and the per-point
worst case over all attacks is kept, for several target models at once.

Roles: *sources* are differentiable models that gradient attacks (``"white-box"``) and transfer
attacks (``"float"``, ``"twin"``) craft on; *targets* are the classifiers being scored (the twin,
the deployed modules), called without gradients. A crafted example is rounded to the input grid
(:meth:`ThreatModel.to_grid`) and scored on every target for which the point is still robust, so
one white-box run serves all deployed engines. Query attacks (Square) run against each target
itself, on that target's remaining robust points; score-based ones skip targets that return only
labels (``label_only``), where a decision-based attack (``rays``) can run instead.

Gradient and transfer attacks run first, query attacks last, in the order given otherwise: a
query attack breaking points that every gradient attack left robust is then exactly the
gradient-masking signal that the validity checks report.

Per target and point, :class:`EnsembleResult` keeps a code: ``-1`` robust, ``0`` misclassified
clean, ``k + 1`` first fooled by ``attacks[k]``; the worst-case input (the one that fooled it, or
the last one tried) and the prediction on it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

import torch

from ..errors import ConfigError
from .base import Attack, Model
from .threat import ThreatModel

ROBUST, CLEAN_WRONG = -1, 0


class CountingModel:
    """Calls ``model`` without gradients and counts the points it was queried on."""

    def __init__(self, model: Model):
        self.model = model
        self.queries = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += int(x.shape[0])
        with torch.no_grad():
            return self.model(x)


@dataclass
class EnsembleResult:
    attacks: list[str]
    clean_pred: dict[str, torch.Tensor]
    code: dict[str, torch.Tensor]
    adv_pred: dict[str, torch.Tensor]
    x_worst: dict[str, torch.Tensor]
    queries: dict[str, dict[str, int]] = field(default_factory=dict)  # attack -> target -> model calls
    seconds: dict[str, float] = field(default_factory=dict)  # attack -> wall time

    def robust(self, target: str) -> torch.Tensor:
        return self.code[target] == ROBUST


def order_attacks(attacks: list[Attack]) -> list[Attack]:
    """Gradient and transfer attacks first, query attacks last (stable otherwise)."""
    return [a for a in attacks if a.access != "query"] + [a for a in attacks if a.access == "query"]


def run_ensemble(attacks: list[Attack], sources: Mapping[str, Model], targets: Mapping[str, Model],
                 x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                 generator_for: Callable[[str], torch.Generator],
                 query_targets: tuple[str, ...] | None = None,
                 label_only: Collection[str] = ()) -> EnsembleResult:
    """Run ``attacks`` (already in order, see :func:`order_attacks`) against ``targets``.

    ``generator_for(key)`` returns the seeded generator of one attack run (key ``attack`` or
    ``attack@target`` for query attacks), so results do not depend on what ran before.
    ``query_targets`` names the targets query attacks run against (default: all); their
    examples are scored on every target. Targets in ``label_only`` return labels only: score-based
    query attacks are not run against them."""
    missing = sorted({a.source for a in attacks if a.access != "query"} - set(sources))
    if missing:
        raise ConfigError(f"attacks need source models {', '.join(missing)}, which this evaluation does not have")
    counted = {t: CountingModel(m) for t, m in targets.items()}
    clean = {t: m(x).argmax(1) for t, m in counted.items()}
    code = {t: torch.where(p == y, ROBUST, CLEAN_WRONG) for t, p in clean.items()}
    x_worst = {t: x.clone() for t in targets}
    adv_pred = {t: p.clone() for t, p in clean.items()}
    res = EnsembleResult([a.name for a in attacks], clean, code, adv_pred, x_worst)

    def score(k: int, idx: torch.Tensor, x_adv: torch.Tensor) -> None:
        for t, m in counted.items():
            live = code[t][idx] == ROBUST
            if not bool(live.any()):
                continue
            pts = idx[live]
            pred = m(x_adv[live]).argmax(1)
            fooled = pred != y[pts]
            x_worst[t][pts] = x_adv[live]
            adv_pred[t][pts] = pred
            code[t][pts[fooled]] = k + 1

    for k, attack in enumerate(attacks):
        t0 = time.perf_counter()
        before = {t: m.queries for t, m in counted.items()}
        if attack.access == "query":
            for t in (query_targets if query_targets is not None else tuple(counted)):
                if attack.outputs == "scores" and t in label_only:
                    continue
                m = counted[t]
                idx = (code[t] == ROBUST).nonzero().squeeze(1)
                if len(idx):
                    x_adv = attack.perturb(m, x[idx], y[idx], generator_for(f"{attack.name}@{t}"))
                    score(k, idx, threat.to_grid(x_adv, x[idx]))
        else:
            alive = torch.stack([c == ROBUST for c in code.values()]).any(0)
            idx = alive.nonzero().squeeze(1)
            if len(idx):
                src = sources[attack.source]
                x_adv = attack.perturb(src, x[idx], y[idx], generator_for(attack.name))
                score(k, idx, threat.to_grid(x_adv, x[idx]))
        res.seconds[attack.name] = time.perf_counter() - t0
        res.queries[attack.name] = {t: m.queries - before[t] for t, m in counted.items()}
    return res
