"""Export parity on MNIST: train (or reuse) int8 / int4 / ternary / binary models, export each in
the integer forms, and print one JSON line per (model, form) with the measured numbers.

    ROBUSTQ_DATA_DIR=/path/to/data python bench/export_parity.py [--cache DIR] [--models int8,bnn]
        [--forms integer,qoperator,packed] [--epochs 1] [--reference 1000] [--train-only]

Models (``robustq_deploy.train.train_stage``, method ``qat``, Adam, batch 128, seed 0):
``int8`` mnist-cnn w8/a8, ``int4`` mnist-cnn w4/a4, ``ternary`` mnist-cnn w-ternary/a8, ``bnn``
mnist-bnn binary weights and activations with an 8-bit first layer. Checkpoints are cached in
``--cache`` and reused. Each line holds: checker result, onnxruntime == numpy reference (logits and
int32 accumulators) on the first ``--reference`` test images, argmax agreement with the twin and
accuracies on the full test set, worst logit difference in output LSBs, integer-only check, and
the model size (weight bytes per kind, packed binary ratio, ONNX initializer bytes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnx

from robustq_deploy.config import DataConfig, ExportConfig, ModelConfig, RunConfig, TrainConfig
from robustq_deploy.models.examples import EXAMPLE_MODELS

MODELS = EXAMPLE_MODELS
FORMS = ("integer", "qoperator", "packed")


def run_config(key: str, epochs: int) -> RunConfig:
    arch, quant = MODELS[key]
    return RunConfig(name=f"export-parity-{key}", data=DataConfig(dataset="mnist"), model=ModelConfig(arch=arch),
                     quant=quant, train=TrainConfig(method="qat", epochs=epochs, batch_size=128, lr=2e-3, seed=0))


def ensure_checkpoint(key: str, cache: Path, epochs: int) -> Path:
    """The cached checkpoint of model ``key``, trained first if absent."""
    from robustq_deploy.train import train_stage

    out = cache / key
    ckpt = out / "model.safetensors"
    if not ckpt.exists():
        t0 = time.perf_counter()
        art = train_stage(run_config(key, epochs), out, progress=False)
        print(json.dumps({"event": "trained", "model": key, "epochs": epochs, "test_acc": art.meta["test_acc"],
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    return ckpt


def binary_ratio(size: dict) -> float | None:
    b = size["by_kind"].get("binary")
    return b["weight_bytes"] / b["float_weight_bytes"] if b else None


def measure(key: str, fmt: str, ckpt: Path, n_reference: int) -> dict:
    from robustq_deploy.data import load_dataset
    from robustq_deploy.export import export_stage
    from robustq_deploy.export.parity import measure_parity
    from robustq_deploy.checkpoint import load_checkpoint

    twin, _, _ = load_checkpoint(ckpt)
    t0 = time.perf_counter()
    art = export_stage(ckpt, ExportConfig(format=fmt, opset=21), ckpt.parent)
    export_s = time.perf_counter() - t0
    test = load_dataset("mnist", "test")
    x, y = test.as_float(), test.labels.astype("int64")
    t0 = time.perf_counter()
    res = measure_parity(twin, onnx.load(art.file), x, y, n_reference=n_reference)
    size = art.meta["size"]
    return {"model": key, "format": fmt, "file": str(art.file), "sha256": art.sha256[:16],
            **res, "size_by_kind": size["by_kind"], "packed_binary_ratio": binary_ratio(size),
            "onnx_initializer_bytes": size["onnx_initializer_bytes"], "file_bytes": art.file.stat().st_size,
            "export_seconds": round(export_s, 2), "parity_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/robustq-export-cache"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reference", type=int, default=1000, help="images compared with the numpy reference")
    ap.add_argument("--train-only", action="store_true")
    args = ap.parse_args(argv)
    for key in args.models.split(","):
        ckpt = ensure_checkpoint(key, args.cache, args.epochs)
        if args.train_only:
            continue
        for fmt in args.forms.split(","):
            print(json.dumps(measure(key, fmt, ckpt, args.reference)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
