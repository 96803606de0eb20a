"""Verification throughput: PGD-40 and Square (1000 queries) on the deployed int8 MNIST module.

    ROBUSTQ_DATA_DIR=/path/to/data python bench/verify.py ARTIFACT [--engines onnxruntime,tvm]
        [--n 1000] [--eps 0.3] [--pgd-steps 40] [--queries 1000] [--threads 1] [--work DIR]

ARTIFACT is a compiled library (or ONNX file) recorded by robustq, e.g. from
``robustq train --config mnist.toml --out R && robustq export R/model.safetensors --out R &&
robustq compile R/model.qdq.onnx --out R``. For every engine separately, the real verify stage
runs on the first ``--n`` MNIST test images with attacks ``pgd`` (white-box on the twin, replayed
on the engine) and ``square`` (queries to the engine itself), no float model, no sweep; the
validity checks run as usual. One JSON line per (engine, attack) with seconds and queries per
second (PGD: forward + backward passes of the twin, points x steps; Square: calls of the deployed
module, counted per point), then one line per engine with the wall time of the whole verify
and its robust accuracies. The machine's load is recorded (``os.getloadavg``) because a shared CPU
makes wall times unreliable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--engines", default="onnxruntime,tvm")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--work", type=Path, default=None, help="Where the reports go (default: a temporary folder).")
    args = ap.parse_args(argv)

    from robustq_deploy.config import VerifyConfig, from_dict
    from robustq_deploy.verify import verify_stage

    work = args.work or Path(tempfile.mkdtemp(prefix="robustq-bench-verify-"))
    for engine in [e for e in args.engines.split(",") if e]:
        cfg = from_dict(VerifyConfig, {
            "attacks": ["pgd", "square"], "eps": args.eps, "steps": args.pgd_steps, "limit": args.n,
            "batch_size": args.batch_size, "engines": [engine], "threads": args.threads, "float_model": False,
            "amplification": False, "attack_params": {"square": {"queries": args.queries}},
        })
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        verify_stage(args.artifact, cfg, work / engine, progress=False)
        wall = time.perf_counter() - t0
        report = json.loads((work / engine / "report.json").read_text())
        name = report["deployed"][0]
        attacked = round(report["models"]["twin"]["clean_acc"] * report["n"])  # PGD runs on clean-correct points
        for attack, seconds in report["timing"]["attack_seconds"].items():
            if attack == "pgd":  # white-box on the twin: one forward + backward per point and step
                unit, count = "gradient_evals", attacked * args.pgd_steps
            else:  # black-box: forward calls of the deployed module, counted per point
                unit, count = "model_calls", report["queries"][attack][name]
            print(json.dumps({"bench": "verify", "engine": name, "attack": attack, "n": report["n"], "eps": args.eps,
                              "seconds": round(seconds, 2), unit: count,
                              "queries_per_s": round(count / seconds, 1) if seconds else None}), flush=True)
        m = report["models"][name]
        print(json.dumps({"bench": "verify-total", "engine": name, "n": report["n"], "eps": args.eps,
                          "pgd_steps": args.pgd_steps, "square_queries": args.queries, "wall_s": round(wall, 1),
                          "under_10_min": wall < 600, "clean_acc": m["clean_acc"],
                          "robust_acc": m["robust_acc"], "flags": [f["name"] for f in report["flags"]],
                          "threads": args.threads, "cpu_count": os.cpu_count(),
                          "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
