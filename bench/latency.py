"""Latency of the deployed integer models: our x86 modules vs onnxruntime vs PyTorch.

For each example model (``mnist-cnn`` int8, ``resnet20`` int8 on 32x32x3, ``mnist-bnn`` binary)
and batch size, in one process and with the same thread count for every engine:

* ``robustq-onnx-<format>``: what ``robustq compile`` makes of the project's own export of the
  model (``integer`` and ``qdq`` ONNX for the int8 models, ``packed`` for the binary one):
  :func:`robustq_deploy.compile.compile_stage` for the host ``x86`` target (the kernel library
  on by default: the whole graph as one fused kernel network when it matches
  :mod:`robustq_deploy.compile.fused.from_onnx`, per op otherwise; the record says which), the
  library loaded back and called on numpy input through the Relax VM;
* ``robustq-twin-fused``: the same fused network built from the model's quantized twin instead
  of its ONNX file (:mod:`robustq_deploy.compile.fused.from_twin`: fused requantization
  epilogues, NHWC storage between layers), built exactly as the compile stage builds a fused
  network for the ``x86`` target (its TVM target and tile records, one function for every
  batch size), exported to a shared library and loaded back from it;
* ``ort-int8-qoperator`` / ``ort-int8-qdq``: onnxruntime on the model quantized by
  onnxruntime's own ``quantize_static`` (QOperator and QDQ formats, per-channel int8 weights,
  uint8 activations, calibrated on the same images);
* ``ort-qdq-export``: onnxruntime on the project's own QDQ export of the twin (models that
  exporter supports);
* ``ort-float`` / ``torch-float``: the float model of the same architecture and weights.

Engines are timed interleaved in blocks (a short pause between blocks lets the other engines'
spinning worker threads go idle), median / p10 / p90 over ``--runs`` timed calls after warm-up,
each call from a numpy array to a numpy array. One JSON object per line goes to stdout
(``model, batch, engine, median_ms, p10_ms, p90_ms, runs``; our rows add integer ops/s and
the fraction of the machine's VNNI peak), then records for compile time, bit-exactness (the
compiled-from-ONNX library against the numpy integer reference run of the same ONNX file, the
fused network against its kernels' references) and the disassembly checks (x86 host builds;
znver4 and aarch64 cross builds of the fused network). A table with ratios against both of our
modules goes to stderr.

Weights are the architectures' seeded initialisation with activation ranges (and BatchNorm
statistics) calibrated on real images (MNIST test images; random images for the 32x32 model,
as CIFAR-10 is not stored on this machine): latency does not depend on the values, only on
shapes, which are the real ones.

    python bench/latency.py [--models mnist-cnn,resnet20,mnist-bnn] [--batches 1,64]
                            [--runs 30] [--threads 2] [--no-cross]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mnist-cnn,resnet20,mnist-bnn")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--runs", type=int, default=30, help="timed calls per engine (>= 20)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-cross", action="store_true", help="skip the znver4 / aarch64 disassembly builds")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


ARGS = parse_args()
# thread pools read these when the libraries start: set them before any import
os.environ["TVM_NUM_THREADS"] = str(ARGS.threads)
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from robustq_deploy.compile.fused import tile_records  # noqa: E402
from robustq_deploy.compile.fused.from_twin import from_twin  # noqa: E402
from robustq_deploy.compile.fused.network import CompiledNetwork, compile_network, export_network  # noqa: E402
from robustq_deploy.config import LayerQuantConfig, QuantConfig  # noqa: E402
from robustq_deploy.kernels import disasm  # noqa: E402
from robustq_deploy.kernels.features import features_of  # noqa: E402
from robustq_deploy.models import build_model  # noqa: E402
from robustq_deploy.targets import get_target  # noqa: E402

MODELS = {
    "mnist-cnn": ((1, 28, 28), "mnist", QuantConfig()),
    "resnet20": ((3, 32, 32), None, QuantConfig()),
    "mnist-bnn": ((1, 28, 28), "mnist",
                  QuantConfig("binary", "binary", layers={"conv1": LayerQuantConfig(weight_bits=8)})),
}
TWIN = "robustq-twin-fused"
VNNI_MACS_PER_CYCLE = 2 * 64  # two 512-bit vpdpbusd per cycle per core (ports 0 and 5)


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- models


def calibration_images(dataset: str | None, shape, n: int, rng) -> np.ndarray:
    if dataset is not None:
        try:
            from robustq_deploy.data import load_dataset

            shared = REPO.parent / "shared" / "data"  # this project's machines keep the datasets here
            ds = load_dataset(dataset, "test", shared if shared.exists() else None, download=False)
            return (ds.images[:n].astype(np.float32) / 255.0).reshape(n, *shape)
        except Exception as exc:  # no local data: random images keep the shapes honest
            log(f"note: {dataset} not available ({exc}); calibrating on random images")
    return rng.random((n, *shape), dtype=np.float32)


def make_models(arch: str, seed: int):
    """Quantized twin (calibrated), float model with the same weights, calibration images."""
    shape, dataset, quant = MODELS[arch]
    torch.manual_seed(seed)
    twin = build_model(arch, quant, 10, shape)
    calib = calibration_images(dataset, shape, 256, np.random.default_rng(seed))
    twin.train()
    with torch.no_grad():
        for i in range(0, len(calib), 64):
            twin(torch.from_numpy(calib[i:i + 64]))
    twin.eval()
    fmodel = build_model(arch, QuantConfig(32, 32), 10, shape)
    fmodel.load_state_dict(twin.state_dict(), strict=False)
    return twin.eval(), fmodel.eval(), calib


def onnx_files(arch: str, twin, fmodel, calib, folder: Path) -> dict[str, Path]:
    """Float ONNX, onnxruntime-quantized QOperator / QDQ, and the project's QDQ export."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    shape = MODELS[arch][0]
    files = {"float": folder / f"{arch}.float.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(fmodel, torch.zeros(1, *shape), str(files["float"]), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          opset_version=17, dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self):
            return next(self.it, None)

    import logging

    logging.getLogger().setLevel(logging.ERROR)
    for fmt in ("QOperator", "QDQ"):
        path = folder / f"{arch}.ort-{fmt.lower()}.onnx"
        quantize_static(str(files["float"]), str(path), Reader(), quant_format=getattr(QuantFormat, fmt),
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        files[f"ort-{fmt.lower()}"] = path
    return files


def project_exports(arch: str, twin, folder: Path) -> dict[str, Path]:
    """The project's own exports of the twin that ``robustq compile`` builds: integer and QDQ
    ONNX for the int8 models, bit-packed for the binary one."""
    from robustq_deploy.export import export_model

    out = {}
    for fmt in ("packed",) if arch == "mnist-bnn" else ("integer", "qdq"):
        try:
            path = folder / f"{arch}.{fmt}.onnx"
            onnx.save(export_model(twin, fmt, 21), str(path))
            out[fmt] = path
        except Exception as exc:  # the exporter may not cover this architecture yet
            log(f"note: project {fmt} export of {arch} unavailable: {str(exc)[:120]}")
    return out


def compiled_from_onnx(arch: str, exports: dict[str, Path], calib, folder: Path) -> dict[str, CompiledNetwork]:
    """``robustq compile`` (the compile stage, x86 host target) of each project export; emits
    the compile time, the kernels used, bit-exactness against the numpy integer reference of
    the same file, and the disassembly check of the library."""
    from robustq_deploy.compile import compile_stage
    from robustq_deploy.config import CompileConfig
    from robustq_deploy.export.reference import ReferenceSession

    out = {}
    for fmt, path in exports.items():
        t0 = time.perf_counter()
        art = compile_stage(path, CompileConfig(target="x86"), folder / f"{arch}.{fmt}.compiled")
        seconds = time.perf_counter() - t0
        emit({"model": arch, "check": "compile stage", "format": fmt, "seconds": round(seconds, 2),
              "compile_path": art.meta["compile_path"],
              "kernels": art.meta.get("kernels") or art.meta.get("implementations"),
              "integer_only": art.meta["integer_only"]})
        run = CompiledNetwork(art.file)
        x = calib[:16]
        # The reference computes a QDQ graph in float; the compiled QDQ model runs the project's
        # fixed-point rescale, i.e. exactly the integer export of the same twin.
        ref_fmt = "integer" if fmt == "qdq" and "integer" in exports else fmt
        sess = ReferenceSession(onnx.load(str(exports[ref_fmt])))
        want = sess.run(None, {sess.input_names[0]: x})[0]
        emit({"model": arch, "check": "bit-exact vs numpy reference", "engine": f"robustq-onnx-{fmt}",
              "reference": f"{ref_fmt} export", "images": len(x), "ok": bool(np.array_equal(run(x), want))})
        emit({"model": arch, "check": "disassembly", "engine": f"robustq-onnx-{fmt}",
              "target": art.meta["tvm_target"].get("mcpu"),
              **disasm.check(art.file, HOST.features(), arch == "mnist-bnn")})
        out[f"robustq-onnx-{fmt}"] = run
    return out


def ort_session(path: Path, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------- timing


def time_engines(engines: dict, runs: int, warmup: int, block: int) -> dict[str, np.ndarray]:
    """Interleave engines in blocks of ``block`` timed calls until each has ``runs``."""
    from robustq_deploy.runtime import wait_idle

    for fn in engines.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in engines}
    while min(len(v) for v in times.values()) < runs:
        for name, fn in engines.items():
            wait_idle()  # let the previous engine's polling threads park
            fn()
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: np.array(v) * 1e3 for k, v in times.items()}


def cpu_ghz() -> float:
    """Nominal clock from the CPU name ("@ 2.50GHz"), else the current MHz reading."""
    import re

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    m = re.search(r"@ ([0-9.]+)GHz", text)
    if m:
        return float(m.group(1))
    m = re.search(r"cpu MHz\s*:\s*([0-9.]+)", text)
    return float(m.group(1)) / 1000 if m else float("nan")


# ------------------------------------------------------------------------------- main


def bench_model(arch: str, folder: Path, table: list) -> None:
    shape = MODELS[arch][0]
    twin, fmodel, calib = make_models(arch, ARGS.seed)
    files = onnx_files(arch, twin, fmodel, calib, folder)
    exports = project_exports(arch, twin, folder)
    if "qdq" in exports:
        files["qdq-export"] = exports["qdq"]
    from_onnx = compiled_from_onnx(arch, exports, calib, folder)

    t0 = time.perf_counter()
    target = HOST.tvm_target()  # what the compile stage builds for: the x86 target, its records
    net = from_twin(twin, target)
    ex = compile_network(net, target, tile_records(HOST))
    lib = folder / f"{arch}.x86.so"
    export_network(ex, lib)
    compile_s = time.perf_counter() - t0
    ours = CompiledNetwork(lib)
    binary = arch == "mnist-bnn"
    emit({"model": arch, "check": "compile", "engine": TWIN, "seconds": round(compile_s, 2), "kernels": len(net.nodes)})

    x_check = calib[:16]
    exact = bool(np.array_equal(ours(x_check), net.reference(x_check)))
    emit({"model": arch, "check": "bit-exact vs numpy reference", "engine": TWIN, "images": len(x_check), "ok": exact})

    feats = features_of(target)
    emit({"model": arch, "check": "disassembly", "engine": TWIN, "target": str(target.attrs.get("mcpu")),
          **disasm.check(lib, feats, binary)})
    if not ARGS.no_cross:
        import tvm

        for spec, cross in (({"kind": "llvm", "mcpu": "znver4"}, None),
                            ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]},
                             "aarch64-linux-gnu-gcc")):
            tgt = tvm.target.Target(spec)
            try:
                path = folder / f"{arch}.{spec.get('mcpu', 'aarch64')}.so"
                export_network(compile_network(from_twin(twin, tgt), tgt), path, cross)
                emit({"model": arch, "check": "disassembly", "engine": TWIN,
                      "target": spec.get("mcpu", spec.get("mtriple")), **disasm.check(path, features_of(tgt), binary)})
            except Exception as exc:
                emit({"model": arch, "check": "disassembly", "engine": TWIN,
                      "target": spec.get("mcpu", spec.get("mtriple")), "ok": False,
                      "error": str(exc).splitlines()[0][:200]})

    sessions = {f"ort-int8-{k[4:]}" if k.startswith("ort-") else f"ort-{k}": ort_session(p, ARGS.threads)
                for k, p in files.items()}
    ours_engines = {**from_onnx, TWIN: ours}
    torch.set_num_threads(ARGS.threads)
    work = net.macs_per_image()
    peak = ARGS.threads * cpu_ghz() * 1e9 * VNNI_MACS_PER_CYCLE * 2
    for batch in [int(b) for b in ARGS.batches.split(",")]:
        x = np.random.default_rng(batch).random((batch, *shape), dtype=np.float32)
        xt = torch.from_numpy(x)
        engines = {name: (lambda run=run: run(x)) for name, run in ours_engines.items()}
        for name, s in sessions.items():
            engines[name] = (lambda s=s: s.run(None, {"input": x}))

        def torch_float():
            with torch.inference_mode():
                return fmodel(xt)
        engines["torch-float"] = torch_float
        times = time_engines(engines, ARGS.runs, ARGS.warmup, block=10 if batch == 1 else 3)
        for name, t in times.items():
            rec = {"model": arch, "batch": batch, "engine": name, "median_ms": round(float(np.median(t)), 4),
                   "p10_ms": round(float(np.percentile(t, 10)), 4), "p90_ms": round(float(np.percentile(t, 90)), 4),
                   "runs": int(len(t)), "threads": ARGS.threads}
            if name in ours_engines:
                sec = np.median(t) / 1e3
                int_ops = 2 * work["int8_macs"] * batch / sec
                rec["int8_ops_per_s"] = float(f"{int_ops:.4g}")
                rec["vnni_peak_ops_per_s"] = float(f"{peak:.4g}")
                rec["fraction_of_peak"] = round(int_ops / peak, 4)
                if work["binary_word_ops"]:
                    rec["binary_ops_per_s"] = float(f"{2 * 32 * work['binary_word_ops'] * batch / sec:.4g}")
            emit(rec)
        table.append((arch, batch, {k: float(np.median(v)) for k, v in times.items()}))


def onnx_engine(med: dict) -> str | None:
    """Our compiled-from-ONNX row of a model (integer export preferred)."""
    names = [k for k in med if k.startswith("robustq-onnx-")]
    return "robustq-onnx-integer" if "robustq-onnx-integer" in names else (names[0] if names else None)


def print_table(table: list) -> None:
    log("")
    log(f"{'model':10s} {'batch':>5s} {'engine':22s} {'median ms':>10s} {'onnx-compiled / engine':>23s} "
        f"{'twin-fused / engine':>20s}")
    for arch, batch, med in table:
        onx = med.get(onnx_engine(med), float("nan"))
        for name, m in med.items():
            log(f"{arch:10s} {batch:5d} {name:22s} {m:10.4f} {onx / m:23.3f} {med[TWIN] / m:20.3f}")
    log("")
    log("targets: int8 models ours/ort-int8 <= 0.8 (batch 1 and 64); mnist-bnn ort-float/ours >= 8 (batch 64)")
    for arch, batch, med in table:
        for ours_name in [k for k in med if k.startswith("robustq-onnx-")] + [TWIN]:
            ours = med[ours_name]
            if arch == "mnist-bnn":
                log(f"  {arch} b{batch} {ours_name}: ort-float / ours = {med['ort-float'] / ours:.2f}x")
            else:
                for k in sorted(k for k in med if k.startswith("ort-int8")):
                    log(f"  {arch} b{batch} {ours_name}: ours / {k} = {ours / med[k]:.3f}")


HOST = get_target("x86")


def main() -> None:
    table: list = []
    with tempfile.TemporaryDirectory(prefix="robustq-bench-") as tmp:
        for arch in ARGS.models.split(","):
            if arch not in MODELS:
                raise SystemExit(f"unknown model {arch!r}; choose from {', '.join(MODELS)}")
            log(f"== {arch}")
            bench_model(arch, Path(tmp), table)
    print_table(table)


if __name__ == "__main__":
    main()
