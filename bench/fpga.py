"""The fpga-sim accelerator target on the project's MNIST models: bit identity with the x86 module,
clean accuracy, what runs where, and the cost model's cycles.

    ROBUSTQ_DATA_DIR=/path/to/data python bench/fpga.py [--models-dir DIR] [--out DIR]
        [--models int8,ternary,bnn] [--presets edge-small,edge-large] [--images 1000] [--reference 1000]
        [--epochs 1] [--train-limit N]

Models (``robustq_deploy.train.train_stage``, method ``qat``, Adam, batch 128, lr 2e-3, seed 0; the
settings of ``bench/export_parity.py``, whose cache folder has the same layout and can be passed as
``--models-dir``): ``int8`` mnist-cnn w8/a8, ``ternary`` mnist-cnn ternary weights / a8, ``bnn``
mnist-bnn binary weights and activations with an 8-bit first layer. Each is read from
``MODELS_DIR/<model>/model.<form>.onnx``, exported there from ``model.safetensors`` when only the
checkpoint is present, trained there first when neither is. The export form each model deploys
in on fpga-sim (:data:`FORMS`): ``integer`` for int8 (ConvInteger / MatMulInteger + fixed-point
requantization; the MAC array takes 8-bit weights), ``packed`` for ternary and bnn (the
ai.robustq TernaryConv2d / BinaryConv2d ops: the accelerator reads 2-bit and 1-bit weights, and
binary layers go to the XNOR array).

Per model, the ONNX file is compiled through the normal compile stage
(``robustq_deploy.compile.compile_stage``) for ``x86`` and for ``fpga-sim:<preset>`` into
``OUT/<model>/`` (the first preset; others in ``OUT/<model>/<preset>/``), each is loaded with
``robustq_deploy.load`` and run on the first ``--images`` MNIST test images. One JSON line per
(model, preset): mismatching output elements fpga-sim vs x86 (bitwise, float32 logits; must be
0) and vs the numpy integer reference on the first ``--reference`` images, clean accuracy of
both, the layers on the accelerator and on the host (with the reasons), cycles per image and per
layer from the cost report, latency and throughput at the preset's clock, compile and run seconds.
A readable table goes to stderr. Exit status 1 when any output differs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from robustq_deploy.config import DataConfig, ExportConfig, ModelConfig, RunConfig, TrainConfig
from robustq_deploy.models.examples import EXAMPLE_MODELS

MODELS = {k: EXAMPLE_MODELS[k] for k in ("int8", "ternary", "bnn")}
FORMS = {"int8": "integer", "ternary": "packed", "bnn": "packed"}
DEFAULT_MODELS_DIR = Path(tempfile.gettempdir()) / "robustq-fpga-bench-models"
DEFAULT_OUT = Path(tempfile.gettempdir()) / "robustq-fpga-bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_config(key: str, epochs: int, train_limit: int | None) -> RunConfig:
    arch, quant = MODELS[key]
    return RunConfig(name=f"fpga-bench-{key}", data=DataConfig(dataset="mnist", train_limit=train_limit),
                     model=ModelConfig(arch=arch), quant=quant,
                     train=TrainConfig(method="qat", epochs=epochs, batch_size=128, lr=2e-3, seed=0))


def ensure_onnx(key: str, models_dir: Path, epochs: int, train_limit: int | None) -> tuple[Path, dict]:
    """``MODELS_DIR/<key>/model.<form>.onnx``, exported (and trained) first when absent; and what
    was done to get it."""
    from robustq_deploy.export import export_stage
    from robustq_deploy.train import train_stage

    folder = models_dir / key
    onnx_path = folder / f"model.{FORMS[key]}.onnx"
    made: dict = {}
    if not onnx_path.exists():
        ckpt = folder / "model.safetensors"
        if not ckpt.exists():
            log(f"{key}: training ({epochs} epoch(s) of QAT on MNIST) into {folder}")
            t0 = time.perf_counter()
            art = train_stage(run_config(key, epochs, train_limit), folder, progress=True)
            made["trained"] = {"epochs": epochs, "train_limit": train_limit, "test_acc": art.meta["test_acc"],
                               "seconds": round(time.perf_counter() - t0, 1)}
        onnx_path = export_stage(ckpt, ExportConfig(format=FORMS[key], opset=21), folder).file
        made["exported"] = FORMS[key]
    return onnx_path, made


def compile_timed(onnx_path: Path, target: str, out: Path):
    from robustq_deploy.compile import compile_stage
    from robustq_deploy.config import CompileConfig

    t0 = time.perf_counter()
    art = compile_stage(onnx_path, CompileConfig(target=target), out)
    return art, time.perf_counter() - t0


def run_timed(lib: Path, x: np.ndarray) -> tuple[np.ndarray, float, str]:
    from robustq_deploy import load

    runner = load(lib)
    t0 = time.perf_counter()
    y = runner(x)
    return y, time.perf_counter() - t0, runner.engine


def mismatches(a: np.ndarray, b: np.ndarray) -> int:
    """Elements whose bits differ (float32 compared as its 32-bit pattern: -0.0 != 0.0, NaN == NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.size, b.size)
    return int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))


def reference_outputs(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnx

    from robustq_deploy.export.reference import ReferenceSession

    sess = ReferenceSession(onnx.load(str(onnx_path)))
    return sess.run(None, {sess.input_names[0]: x})[0]


def measure(key: str, onnx_path: Path, preset: str, out: Path, x: np.ndarray, labels: np.ndarray,
            x86: tuple[np.ndarray, float, float], ref: np.ndarray | None) -> dict:
    art, compile_s = compile_timed(onnx_path, f"fpga-sim:{preset}", out)
    y, run_s, engine = run_timed(art.file, x)
    y86, x86_compile_s, x86_run_s = x86
    accel = art.meta["accel"]
    cost = accel["cost"]
    t = cost["totals"]
    layers = [{"name": c["name"], "placement": c["placement"], "op": c["op"],
               **({"engine": c["engine"], "weight_format": c["weight_format"], "cycles": c["cycles"],
                   "compute_cycles": c["compute_cycles"], "dma_cycles": c["dma_cycles"],
                   "overhead_cycles": c["overhead_cycles"], "bound": c["bound"],
                   "weights_resident": c["weights_resident"], "onchip_bytes": c["onchip_bytes"]}
                  if c["placement"] == "accelerator" else {"reasons": c["reasons"]})}
              for c in cost["layers"]]
    return {
        "model": key, "format": FORMS[key], "onnx": str(onnx_path), "preset": accel["preset"],
        "accelerator": accel["accelerator"]["description"], "images": int(len(x)), "engine": engine,
        "mismatches_vs_x86": mismatches(y, y86), "elements": int(y.size),
        "reference_images": None if ref is None else int(len(ref)),
        "mismatches_vs_reference": None if ref is None else mismatches(y[:len(ref)], ref),
        "acc_fpga_sim": float(np.mean(y.argmax(1) == labels)), "acc_x86": float(np.mean(y86.argmax(1) == labels)),
        "on_accelerator": accel["offloaded"], "on_host": [h["name"] for h in accel["host_layers"]],
        "cycles_per_image": t["cycles"], "latency_us": t["latency_us"], "throughput_per_s": t["throughput_per_s"],
        "clock_mhz": accel["accelerator"]["clock_mhz"], "utilisation": t["utilisation"],
        "weight_preload_bytes": t["weight_preload_bytes"], "traffic_bytes_per_image": t["traffic_bytes_per_image"],
        "layers": layers, "integer_only_host": art.meta["integer_only"],
        "compile_seconds": {"fpga_sim": round(compile_s, 2), "x86": round(x86_compile_s, 2)},
        "run_seconds": {"fpga_sim": round(run_s, 2), "x86": round(x86_run_s, 2)},
        "artifact": str(art.file),
    }


def print_table(rows: list[dict]) -> None:
    head = ("model", "form", "preset", "mism x86", "mism ref", "acc fpga", "acc x86", "accel / host",
            "cycles/img", "latency us", "compile s", "run s")
    lines = [head]
    for r in rows:
        lines.append((r["model"], r["format"], r["preset"], str(r["mismatches_vs_x86"]),
                      "-" if r["mismatches_vs_reference"] is None else str(r["mismatches_vs_reference"]),
                      f"{r['acc_fpga_sim']:.4f}", f"{r['acc_x86']:.4f}",
                      f"{','.join(r['on_accelerator']) or '-'} / {','.join(r['on_host']) or '-'}",
                      f"{r['cycles_per_image']:,}", f"{r['latency_us']:.1f}",
                      f"{r['compile_seconds']['fpga_sim']:.1f} (x86 {r['compile_seconds']['x86']:.1f})",
                      f"{r['run_seconds']['fpga_sim']:.1f} (x86 {r['run_seconds']['x86']:.1f})"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        log("  ".join(v.ljust(w) for v, w in zip(line, widths)))
    for r in rows:
        log(f"{r['model']} on {r['preset']}: " + "; ".join(
            f"{c['name']} {c['engine']}/{c['weight_format']} {c['cycles']:,} cyc ({c['bound']})"
            if c["placement"] == "accelerator" else f"{c['name']} host ({'; '.join(c['reasons'])})"
            for c in r["layers"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                    help="model folders <dir>/<model>/ (trained and exported there when absent)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="compiled artifacts go to <out>/<model>/")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--presets", default="edge-small,edge-large")
    ap.add_argument("--images", type=int, default=1000, help="first N MNIST test images run on both modules")
    ap.add_argument("--reference", type=int, default=1000, help="images also compared with the numpy reference")
    ap.add_argument("--epochs", type=int, default=1, help="QAT epochs when a model must be trained")
    ap.add_argument("--train-limit", type=int, default=None, help="training images when a model must be trained")
    args = ap.parse_args(argv)
    unknown = [k for k in args.models.split(",") if k not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")

    from robustq_deploy.data import load_dataset

    test = load_dataset("mnist", "test")
    x = test.as_float()[:args.images].astype(np.float32)
    labels = test.labels[:args.images]
    presets = args.presets.split(",")
    rows, bad = [], False
    for key in args.models.split(","):
        onnx_path, made = ensure_onnx(key, args.models_dir, args.epochs, args.train_limit)
        if made:
            print(json.dumps({"event": "prepared", "model": key, **made}), flush=True)
        out = args.out / key
        art86, x86_compile_s = compile_timed(onnx_path, "x86", out)
        y86, x86_run_s, _ = run_timed(art86.file, x)
        ref = reference_outputs(onnx_path, x[:args.reference]) if args.reference else None
        for i, preset in enumerate(presets):
            log(f"{key}: fpga-sim:{preset}")
            row = measure(key, onnx_path, preset, out if i == 0 else out / preset, x, labels,
                          (y86, x86_compile_s, x86_run_s), ref)
            bad |= row["mismatches_vs_x86"] != 0 or bool(row["mismatches_vs_reference"])
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_table(rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
