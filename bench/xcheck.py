"""Cross-check: verify's default attack ensemble against an independent reference, point by point.

    ROBUSTQ_DATA_DIR=/path/to/data python bench/xcheck.py ARTIFACT [--data mnist] [--n 500] [--eps 0.3]
        [--engines onnxruntime] [--budget standard] [--threads 2] [--jsonl FILE]

ARTIFACT is what ``robustq verify`` takes (an ONNX file, a compiled library recorded by robustq, an
artifact folder). On the first ``--n`` test points:

* **tool**: the verify stage's evaluation with the ``--budget`` ensemble (the default: APGD-CE,
  APGD-T with 9 targets, Square-5000), white-box on the twin verify picks, replayed on each
  deployed engine, Square on each engine;
* **reference**, independent code (torchattacks 3.5.1) on the same points and the same white-box
  twin: AutoAttack's standard components with their original settings (APGD-CE 100 steps, APGD-T
  100 steps x 9 targets, FAB-T 100 steps x 9 targets, Square 5000 queries on the twin), then
  PGD-100 with 5 random restarts, then Square 5000 queries on each deployed engine itself. Each
  attack runs on the points still robust on that engine, at the largest radius on the uint8 grid
  inside the ball (``floor(255 eps) / 255``: a perturbation of that size survives rounding to the
  grid, one of exactly ``eps`` may not); every adversarial image is projected into the eps-ball
  on the grid and scored on the engine.

Output: one JSON line per (engine, point): label, whether each side left it robust and which attack
broke it; then one summary line per engine: worst-case robust accuracy of each side, the points
only one side broke, wall times, and ``tool_within_1_point`` (the tool's worst case is at most one
percentage point above the reference's). torchattacks is a bench/test dependency only
(``pip install --no-deps torchattacks==3.5.1``; it needs scipy, tqdm and requests).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robustq_deploy.attacks import ThreatModel  # noqa: E402
from robustq_deploy.config import VerifyConfig, from_dict  # noqa: E402


class EngineModule(torch.nn.Module):
    """A deployed engine as an ``nn.Module`` for torchattacks (forward only, on the uint8 grid)."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def forward(self, x):
        with torch.no_grad():
            return self.engine(x)


def tool_codes(art, cfg: VerifyConfig, data, models, es) -> tuple[dict[str, torch.Tensor], dict, float]:
    """Per engine, the per-point code of verify's ensemble (-1 robust, 0 clean wrong, k+1 attack k)."""
    from robustq_deploy.verify.robustness import evaluate
    from robustq_deploy.verify.state import RunState

    state = RunState(None, "")
    t0 = time.perf_counter()
    report = evaluate(models.twin, es.engines, data.x, data.y, cfg, False, state, models.onnx_twin, models.primary,
                      onnx_attack=models.onnx_fast)
    seconds = time.perf_counter() - t0
    nb = len(range(0, len(data.y), cfg.batch_size))
    codes = {e.name: torch.cat([state.get(f"main/b{b}")[0][f"{e.name}.code"] for b in range(nb)]) for e in es.engines}
    return codes, report, seconds


def grid_radius(threat: ThreatModel) -> float:
    """The largest L-inf radius whose perturbations of grid images stay on the grid inside the ball."""
    return float(int(threat.eps / threat.grid + 1e-6)) * threat.grid if threat.grid else threat.eps


def reference_attacks(twin, threat: ThreatModel, n_classes: int, pgd_restarts: int, square_queries: int):
    """(name, attack on the twin) in the order they run; the engine's own Square comes last."""
    import torchattacks

    eps = grid_radius(threat)
    out = [("apgd-ce", torchattacks.APGD(twin, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0)),
           ("apgd-t", torchattacks.APGDT(twin, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=n_classes,
                                         seed=0)),
           ("fab-t", torchattacks.FAB(twin, norm="Linf", eps=eps, steps=100, n_restarts=1, multi_targeted=True,
                                      n_classes=n_classes, seed=0)),
           ("square-twin", torchattacks.Square(twin, norm="Linf", eps=eps, n_queries=square_queries, n_restarts=1,
                                               seed=0))]
    for r in range(pgd_restarts):
        out.append((f"pgd-100#{r}", torchattacks.PGD(twin, eps=eps, alpha=2.5 * eps / 100, steps=100,
                                                     random_start=True)))
    return out


def reference_codes(engine, twin, x, y, threat, n_classes, pgd_restarts, square_queries, batch):
    """Per point: None if robust on ``engine`` under every reference attack, else the first breaking
    attack's name ("clean" for a point misclassified clean)."""
    import torchattacks

    with torch.no_grad():
        broken = [None if p == t else "clean" for p, t in zip(engine.predict(x).tolist(), y.tolist())]
    attacks = reference_attacks(twin, threat, n_classes, pgd_restarts, square_queries)
    attacks.append(("square-engine", torchattacks.Square(EngineModule(engine), norm="Linf", eps=grid_radius(threat),
                                                        n_queries=square_queries, n_restarts=1, seed=0)))
    seconds = {}
    for name, attack in attacks:
        t0 = time.perf_counter()
        if name.startswith("pgd-100#"):
            torch.manual_seed(int(name.split("#")[1]))  # torchattacks' PGD draws its start from torch's RNG
        idx = torch.tensor([i for i, b in enumerate(broken) if b is None], dtype=torch.long)
        for s in range(0, len(idx), batch):
            rows = idx[s:s + batch]
            adv = attack(x[rows], y[rows])
            adv = threat.to_grid(threat.project(adv.detach(), x[rows]), x[rows])
            with torch.no_grad():
                wrong = engine.predict(adv) != y[rows]
            for i in rows[wrong].tolist():
                broken[i] = name
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(json.dumps({"bench": "xcheck-progress", "engine": engine.name, "attack": name,
                          "robust": sum(b is None for b in broken), "seconds": seconds[name]}), file=sys.stderr,
              flush=True)
    return broken, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--data", default=None, help="dataset (default: the checkpoint's)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--engines", default="onnxruntime")
    ap.add_argument("--budget", default="standard")
    ap.add_argument("--twin", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--pgd-restarts", type=int, default=5)
    ap.add_argument("--square-queries", type=int, default=5000)
    ap.add_argument("--jsonl", type=Path, default=None, help="Also append every line to this file.")
    args = ap.parse_args(argv)

    from robustq_deploy.verify.data import test_points
    from robustq_deploy.verify.engines import deployed_engines, resolve_deployed
    from robustq_deploy.verify.models import load_models

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = from_dict(VerifyConfig, {"budget": args.budget, "eps": args.eps, "limit": args.n, "batch_size": args.batch,
                                   "engines": args.engines.split(","), "threads": args.threads, "float_model": False,
                                   "amplification": False, "dataset": args.data, "twin": args.twin,
                                   "validity": {"points": 20}})
    art = resolve_deployed(args.artifact)
    models = load_models(art, cfg)
    data = test_points(cfg.dataset, None, cfg.limit, models.run_cfg)
    es = deployed_engines(art, cfg.engines, cfg.batch_size, cfg.threads, None, models.spec, data.num_classes)
    out = open(args.jsonl, "a") if args.jsonl else None

    def emit(row):
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    codes, report, tool_s = tool_codes(art, cfg, data, models, es)
    names = [a["name"] for a in report["attacks"]]
    threat = ThreatModel("linf", args.eps)
    twin = models.attack_twins()[models.primary]  # the model the tool's white-box attacks differentiate
    for e in es.engines:
        t0 = time.perf_counter()
        ref, ref_s = reference_codes(e, twin, data.x, data.y, threat, data.num_classes, args.pgd_restarts,
                                     args.square_queries, args.batch)
        ref_wall = time.perf_counter() - t0
        code = codes[e.name]
        for i in range(len(data.y)):
            c = int(code[i])
            emit({"bench": "xcheck", "engine": e.name, "point": i, "label": int(data.y[i]),
                  "tool_robust": c == -1, "tool_broken_by": None if c == -1 else ("clean" if c == 0 else names[c - 1]),
                  "reference_robust": ref[i] is None, "reference_broken_by": ref[i]})
        n = len(data.y)
        tool_acc = int((code == -1).sum()) / n
        ref_acc = sum(r is None for r in ref) / n
        emit({"bench": "xcheck-summary", "engine": e.name, "artifact": str(args.artifact), "dataset": data.name,
              "n": n, "eps": args.eps, "budget": args.budget, "white_box_twin": models.primary,
              "tool_attacks": names, "tool_worst_case": tool_acc, "reference_worst_case": ref_acc,
              "reference": "torchattacks 3.5.1: APGD-CE, APGD-T x9, FAB-T x9 (100 steps each), Square-5000 on the twin, "
                           f"PGD-100 x{args.pgd_restarts}, Square-{args.square_queries} on the engine, "
                           f"at radius {grid_radius(threat):.6f}",
              "difference_points": round(100 * (tool_acc - ref_acc), 2),
              "tool_within_1_point": tool_acc <= ref_acc + 0.01,
              "only_reference_broke": sum(int(code[i]) == -1 and ref[i] is not None for i in range(n)),
              "only_tool_broke": sum(int(code[i]) != -1 and ref[i] is None for i in range(n)),
              "tool_seconds_all_engines": round(tool_s, 1), "reference_seconds": round(ref_wall, 1),
              "reference_seconds_per_attack": ref_s, "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "load_avg_end": round(os.getloadavg()[0], 2)})
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
