"""Per-call overhead of ``robustq_deploy.load(...)(x)`` over the raw Relax VM call and onnxruntime.

Two of the project's own int8 models, each trained for a short time with a fixed seed (latency
depends on the shapes, not on the weights), exported to QDQ ONNX and compiled for the host
``x86`` target with the library API, into a temporary folder (``--keep DIR`` keeps them):

* ``digits``: the demo's digits-cnn (``robustq demo``'s config, 1 training epoch), 1x8x8 input;
* ``mnist-cnn``: mnist-cnn int8 (QAT, 1 epoch on 2000 MNIST images), 1x28x28 input.

For each model, batch and thread count (1 and 2), in one process, engines timed interleaved:

* ``onnxruntime``: ``session.run`` on the same int8 ONNX file (intra-op threads = threads);
* ``relax-vm``: the raw Relax VM call on the artifact's library, numpy in and out with nothing
  else: ``np.from_dlpack(main(tvm.runtime.from_dlpack(x)))`` (``main`` looked up once, ``x``
  already 64-byte aligned, the output a zero-copy view);
* ``relax-vm-tensor``: ``main(t)`` on a TVM tensor made beforehand, the output left in TVM (the
  floor: the VM's dispatch and the kernels);
* ``load``: ``robustq_deploy.load(dir, threads=threads)(x)`` (checks, staging, a fresh numpy
  output);

and once per model and batch ``load-default``: ``robustq_deploy.load(dir)(x)`` at its default
threads, the row "default threads vs threads=2" (no oversubscription: not slower than at 2).

A run is the mean of ``--calls`` consecutive calls (after a pause that lets the previous engine's
worker threads park, then one untimed call, so the engine's thread pool is set and awake); the engines of one thread count take turns run by run until each has
``--runs`` runs (then the next thread count: TVM's pool is reconfigured once per group, never
between engines); the rows give the median and p10/p90 over the runs. One JSON object per line: a ``host`` row (CPU,
physical cores, load average before), one row per engine, one ``ratios`` row per model, batch and
threads (``load`` over ``relax-vm``, over ``relax-vm-tensor`` and over ``onnxruntime``, and the
overhead in microseconds), the default-threads row, a bit-exactness row per model (``load``
against the raw VM call on the same images) and the load average after.

    python bench/overhead.py [--models digits,mnist-cnn] [--batches 1,64] [--runs 30] [--calls N]
                             [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="digits,mnist-cnn")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--runs", type=int, default=30, help="timed runs per engine (>= 30 for the issue's numbers)")
    p.add_argument("--calls", type=int, default=0, help="calls per run (0: 200 at batch 1, 10 above)")
    p.add_argument("--threads", default="1,2", help="thread counts every engine is timed at")
    p.add_argument("--keep", type=Path, default=None, help="build the models into DIR (reused when present)")
    return p.parse_args(argv)


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- models


def model_configs() -> dict:
    """Run configs of the benchmarked models (short seeded training, one torch thread)."""
    from robustq_deploy.api import run_config
    from robustq_deploy.config import to_dict
    from robustq_deploy.pipeline import demo_config

    demo = to_dict(demo_config())
    return {
        "digits": run_config({**demo, "train": {**demo["train"], "epochs": 1, "eps_warmup_epochs": 0, "threads": 1}}),
        "mnist-cnn": run_config({
            "data": {"dataset": "mnist", "train_limit": 2000, "test_limit": 100},
            "model": {"arch": "mnist-cnn"}, "quant": {"weight_bits": 8, "act_bits": 8},
            "train": {"method": "qat", "epochs": 1, "batch_size": 64, "lr": 3e-3, "seed": 0, "threads": 1},
            "export": {"format": "qdq"}}),
    }


def build(name: str, cfg, folder: Path):
    """Train, export and compile ``name`` into ``folder`` (reused when its library exists);
    returns the ONNX and compiled artifacts."""
    from robustq_deploy.compile import compile_stage
    from robustq_deploy.config import CompileConfig
    from robustq_deploy.export import export_stage
    from robustq_deploy.manifest import Manifest
    from robustq_deploy.train import train_stage

    folder.mkdir(parents=True, exist_ok=True)
    arts = {a.kind: a for a in Manifest.load(folder).artifacts} if (folder / "manifest.json").exists() else {}
    if "compiled" not in arts or "onnx" not in arts:
        t0 = time.perf_counter()
        ckpt = train_stage(cfg, folder, progress=False)
        arts["onnx"] = export_stage(ckpt.file, cfg.export, folder)
        arts["compiled"] = compile_stage(arts["onnx"].file, CompileConfig(target="x86"), folder)
        emit({"model": name, "check": "build", "seconds": round(time.perf_counter() - t0, 1),
              "compile_path": arts["compiled"].meta.get("compile_path")})
    return arts["onnx"], arts["compiled"]


# ------------------------------------------------------------------------------- timing


# Before an engine's run the previous engine's polling worker threads must park first
# (``wait_idle``): onnxruntime's intra-op workers keep spinning for longer than 20 ms after a
# run (measured: the TVM call right after a 2-thread onnxruntime run was 3x slower after 20 ms).


def time_engines(engines: dict, runs: int, calls: int) -> dict:
    """``engines``: name -> (setup, call). Runs taken in turns; returns name -> ms per call of
    each run."""
    import numpy as np

    from robustq_deploy.runtime import wait_idle

    times = {k: [] for k in engines}
    for _ in range(runs):
        for name, (setup, fn) in engines.items():
            wait_idle()
            setup()
            fn()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls)
    return {k: np.array(v) * 1e3 for k, v in times.items()}


def stats(t) -> dict:
    import numpy as np

    return {"median_ms": round(float(np.median(t)), 5), "p10_ms": round(float(np.percentile(t, 10)), 5),
            "p90_ms": round(float(np.percentile(t, 90)), 5)}


def bench_model(name: str, onnx_art, lib_art, args) -> None:
    import numpy as np
    import onnxruntime as ort
    import tvm

    import robustq_deploy
    from robustq_deploy.runtime import aligned_empty
    from robustq_deploy.runtime import load_tvm_module, relax_vm, tvm_threads, wait_idle

    folder = lib_art.root
    thread_counts = [int(t) for t in args.threads.split(",")]
    runners = {t: robustq_deploy.load(folder, threads=t) for t in thread_counts}
    default = robustq_deploy.load(folder)
    vm = relax_vm(load_tvm_module(lib_art, lib_art.file, lib_art.sha256), lib_art.file)
    main = vm["main"]
    sessions = {}
    for t in thread_counts:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = t
        opts.inter_op_num_threads = 1
        sessions[t] = ort.InferenceSession(str(onnx_art.file), opts, providers=["CPUExecutionProvider"])
    spec = default.inputs[0]
    from_dlpack = tvm.runtime.from_dlpack

    for batch in [int(b) for b in args.batches.split(",")]:
        x = np.random.default_rng(batch).random((batch, *spec["shape"][1:]), dtype=np.float32)
        xa = aligned_empty(x.shape, x.dtype)
        xa[...] = x
        xt = from_dlpack(xa)
        vm_out = np.from_dlpack(main(xt)).copy()
        emit({"model": name, "batch": batch, "check": "bit-exact load vs relax-vm",
              "ok": all(bool(np.array_equal(r(x), vm_out)) for r in [*runners.values(), default])})
        calls = args.calls or (200 if batch == 1 else 10)
        med = {}
        # engines at one thread count are interleaved; thread counts follow each other (TVM's one
        # pool per calling thread is reconfigured once per group, not between engines)
        for t in thread_counts:
            def pool(t=t):
                tvm_threads(t)
            sess, feed = sessions[t], {spec["name"]: x}
            engines = {
                "onnxruntime": (lambda: None, lambda sess=sess, feed=feed: sess.run(None, feed)),
                "relax-vm": (pool, lambda: np.from_dlpack(main(from_dlpack(xa)))),
                "relax-vm-tensor": (pool, lambda: main(xt)),
                "load": (lambda: None, lambda r=runners[t]: r(x)),
            }
            if t == 2:
                engines["load-default"] = (lambda: None, lambda: default(x))
            for setup, fn in engines.values():  # warm-up: pools started, caches filled
                setup()
                for _ in range(calls):
                    fn()
                wait_idle()
            for engine, ms in time_engines(engines, args.runs, calls).items():
                threads = default.threads if engine == "load-default" else t
                emit({"model": name, "batch": batch, "engine": engine, "threads": threads, **stats(ms),
                      "runs": len(ms), "calls_per_run": calls})
                med[engine, t] = float(np.median(ms))
        for t in thread_counts:
            load_ms = med["load", t]
            emit({"model": name, "batch": batch, "threads": t, "check": "ratios",
                  "load_over_relax_vm": round(load_ms / med["relax-vm", t], 3),
                  "load_over_relax_vm_tensor": round(load_ms / med["relax-vm-tensor", t], 3),
                  "load_over_onnxruntime": round(load_ms / med["onnxruntime", t], 3),
                  "overhead_us_over_relax_vm": round((load_ms - med["relax-vm", t]) * 1e3, 2)})
        if 2 in thread_counts:
            emit({"model": name, "batch": batch, "check": "default threads vs threads=2",
                  "default_threads": default.threads, "default_ms": round(med["load-default", 2], 5),
                  "threads2_ms": round(med["load", 2], 5),
                  "default_over_threads2": round(med["load-default", 2] / med["load", 2], 3)})


def main() -> None:
    args = parse_args()
    import platform

    from robustq_deploy.runtime import physical_cores

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    emit({"host": platform.node(), "cpu": cpu, "physical_cores": physical_cores(), "logical_cpus": os.cpu_count(),
          "loadavg_before": [round(v, 2) for v in os.getloadavg()]})
    cfgs = model_configs()
    with tempfile.TemporaryDirectory(prefix="robustq-overhead-") as tmp:
        root = args.keep or Path(tmp)
        for name in args.models.split(","):
            if name not in cfgs:
                raise SystemExit(f"unknown model {name!r}; choose from {', '.join(cfgs)}")
            log(f"== {name}")
            onnx_art, lib_art = build(name, cfgs[name], root / name)
            bench_model(name, onnx_art, lib_art, args)
    emit({"loadavg_after": [round(v, 2) for v in os.getloadavg()]})


if __name__ == "__main__":
    main()
