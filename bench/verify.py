"""Verification throughput: an attack budget (default ``standard``: APGD-CE, APGD-T x9, Square-5000)
or PGD-40 + Square on the deployed int8 MNIST module.

    ROBUSTQ_DATA_DIR=/path/to/data python bench/verify.py ARTIFACT [--engines onnxruntime,tvm]
        [--n 1000] [--eps 0.3] [--budget standard | --pgd-steps 40 --queries 1000] [--threads 1] [--work DIR]

``--engines`` lists engines verified one at a time; ``a+b`` verifies both in one run (one white-box
pass replayed on both, Square on each). ARTIFACT is a compiled library (or ONNX file), e.g. from
``robustq train --config mnist.toml --out R && robustq export R/model.safetensors --out R &&
robustq compile R/model.qdq.onnx --out R``. For every engine separately, the real verify stage
runs on the first ``--n`` MNIST test images with the ``--budget`` ensemble (white-box on the twin,
replayed on the engine; Square queries the engine itself), or, with ``--budget none``, ``pgd``
(``--pgd-steps``) and ``square`` (``--queries``); no float model, no sweep; the validity checks
run as usual. One JSON line per (engine, attack) with seconds and throughput (white-box:
points attacked per second; Square: calls of the deployed module per second, counted per point),
then one line per engine with the wall time of the whole verify and its robust accuracies. The machine's load is recorded (``os.getloadavg``) because a shared CPU
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
    ap.add_argument("--budget", default="standard", help="fast, standard, thorough, or none (PGD + Square)")
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--work", type=Path, default=None, help="Where the reports go (default: a temporary folder).")
    args = ap.parse_args(argv)

    from robustq_deploy.config import VerifyConfig, from_dict
    from robustq_deploy.verify import verify_stage

    work = args.work or Path(tempfile.mkdtemp(prefix="robustq-bench-verify-"))
    for group in [e for e in args.engines.split(",") if e]:  # "onnxruntime+tvm": one verify with both engines
        attacks = {"attacks": ["pgd", "square"], "steps": args.pgd_steps,
                   "attack_params": {"square": {"queries": args.queries}}} if args.budget == "none" else \
            {"budget": args.budget}
        cfg = from_dict(VerifyConfig, {
            **attacks, "eps": args.eps, "limit": args.n, "batch_size": args.batch_size, "engines": group.split("+"),
            "threads": args.threads, "float_model": False, "amplification": False,
        })
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        verify_stage(args.artifact, cfg, work / group, progress=False)
        wall = time.perf_counter() - t0
        report = json.loads((work / group / "report.json").read_text())
        name = "+".join(report["deployed"])
        twin = report.get("white_box_twin", "twin")
        access = {a["name"]: a["access"] for a in report["attacks"]}
        robust = report["models"][twin]["clean_acc"]
        for attack, seconds in report["timing"]["attack_seconds"].items():
            if access[attack] == "query":  # black-box: forward calls of the deployed module, counted per point
                unit, count = "model_calls", sum(report["queries"][attack][e] for e in report["deployed"])
            else:  # white-box on the twin: the points it attacked (those still robust on twin or engine)
                unit, count = "points_attacked", round(robust * report["n"])
            robust = report["models"][twin]["robust_acc"][attack]
            print(json.dumps({"bench": "verify", "engine": name, "attack": attack, "n": report["n"], "eps": args.eps,
                              "seconds": round(seconds, 2), unit: count,
                              "per_s": round(count / seconds, 1) if seconds else None}), flush=True)
        m = report["models"][report["deployed"][-1]]
        print(json.dumps({"bench": "verify-total", "engine": name, "n": report["n"], "eps": args.eps,
                          "budget": args.budget, "attacks": [a["name"] for a in report["attacks"]],
                          "wall_s": round(wall, 1), "under_20_min": wall < 1200, "clean_acc": m["clean_acc"],
                          "robust_acc": m["robust_acc"], "flags": [f["name"] for f in report["flags"]],
                          "threads": args.threads, "cpu_count": os.cpu_count(),
                          "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
