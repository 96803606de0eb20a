"""Models quantized by onnxruntime, compiled by ``robustq compile``: latency and bit-exactness
against onnxruntime on the same file.

For each model (a CIFAR-shape ResNet-18 and MobileNetV2 at 3x32x32, MobileNetV2 also at
3x224x224), built here from the standard definitions (ResNet-18: BasicBlocks [2, 2, 2, 2], widths
64-512, the CIFAR stem of a 3x3 stride-1 conv without max pooling; MobileNetV2: the inverted
residual settings of the paper, ReLU6, width 1.0, with the usual CIFAR changes at 32x32: stride 1
in the stem and in the second stage), and for each format onnxruntime's quantization tool writes
(``quantize_static``, ``QuantFormat.QDQ`` and ``QuantFormat.QOperator``; per-channel int8
weights, uint8 activations, calibrated on seeded random images):

* the file is compiled exactly as a user does it, ``robustq compile FILE --target x86 --out DIR``
  in a subprocess (nothing tuned or set beside it), timed, and its manifest entry read back;
* the library runs through ``robustq_deploy.load(...)`` and onnxruntime runs the same ONNX file;
  both get ``--threads`` threads (onnxruntime's ``intra_op_num_threads``; ours through
  ``load(..., threads=N)``, which sets TVM's pool);
* per batch: bit-exactness on seeded random images (``bit_exact`` and the max abs difference of
  the logits), then both engines timed interleaved call by call, each call after the process
  has gone idle (``robustq_deploy.runtime.wait_idle``: neither engine's polling worker threads
  may slow the other; ``--pause-ms`` more on top), median of
  ``--runs`` (``--max-time-s`` caps a row's timing; the row says how many runs it got);
* ``load_avg`` in each row is the machine's load average when the row was written.

``--work DIR --reuse`` times builds already in DIR again instead of compiling them anew, when the
build's manifest records the sha256 of the ONNX file the bench made (the files are byte-identical
for a seed) and the build was made by the same compiler source (a hash of every ``.py`` file of
``robustq_deploy/``, ``kernels/`` and ``targets/``); such rows say ``compile_reused`` and carry the compile seconds measured when the
build was made.

A compile (or run) that is refused gives rows with its one-line error instead of numbers.

Weights: the architectures' seeded PyTorch initialisation, BatchNorm statistics set by a few
forward passes in training mode on seeded random images; no training (latency and
bit-exactness do not depend on what the weights learned, only on shapes and quantization
parameters, which are those of a calibrated model).

``compile_path`` in a row is what the artifact records: the whole-graph path (``fused-network``
or ``per-op``) and why the fused path was refused; per layer, the conv / matmul / gemm layers of
the ONNX file with the path each took as far as the manifest says (``fused-network``, ``per-op
integer: <implementation>`` from the artifact's ``layers`` record, e.g. ``int_conv2d_requant:tiled``,
the kernel library's conv with the requantization in its epilogue; ``per-op float`` with its reason);
``per_layer_recorded`` says whether the artifact recorded anything per layer at all. The kernel
counts and the ops left in float come with it.

``--aarch64`` adds, when the cross compiler and qemu-aarch64 exist, ``robustq compile --target
aarch64`` of each file and a bit-exactness row per batch under qemu (no timing).

One JSON object per line on stdout; progress on stderr.

    python bench/foreign.py [--models resnet18,mobilenetv2] [--sizes 32,224] [--formats qdq,qoperator]
                            [--batches 1,64] [--runs 30] [--threads 2] [--aarch64 | --aarch64-only]
                            [--max-time-s S] [--pause-ms 0] [--work DIR [--reuse]]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (model, input side): the cases of the bench
CASES = (("resnet18", 32), ("mobilenetv2", 32), ("mobilenetv2", 224))
FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,mobilenetv2")
    p.add_argument("--sizes", default="32,224", help="input sides (ResNet-18 exists at 32 only)")
    p.add_argument("--formats", default="qdq,qoperator")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--runs", type=int, default=30, help="timed calls per engine, interleaved")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="threads of both engines")
    p.add_argument("--max-time-s", type=float, default=0.0,
                   help="stop timing a row after this many seconds (at least 5 runs; 0: no limit); the row says how many ran")
    p.add_argument("--aarch64", action="store_true", help="bit-exactness of aarch64 builds under qemu (no timing)")
    p.add_argument("--aarch64-only", action="store_true", help="the aarch64 rows only (no x86 build or timing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pause-ms", type=float, default=0.0,
                   help="extra idle pause before each timed call, after the process has gone idle")
    p.add_argument("--work", default=None, help="keep the ONNX files and builds in this folder (default: a temp folder)")
    p.add_argument("--reuse", action="store_true",
                   help="with --work: time a build already in the folder whose manifest records this ONNX file's "
                        "sha256 (its compile seconds are the ones recorded when it was built)")
    return p.parse_args(argv)


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- models


def build_model(name: str, side: int, num_classes: int = 10):
    """ResNet-18 (CIFAR form) or MobileNetV2 (CIFAR form at 32x32, ImageNet form otherwise)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def conv_bn_relu6(cin, cout, k, stride, groups=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU6())

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.residual = stride == 1 and cin == cout
            layers = [conv_bn_relu6(cin, hidden, 1, 1)] if expand != 1 else []
            layers += [conv_bn_relu6(hidden, hidden, 3, stride, hidden),
                       nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        # (expansion t, channels c, repeats n, stride s) of the paper's Table 2
        SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1))

        def __init__(self, cifar: bool):
            super().__init__()
            layers, cin = [conv_bn_relu6(3, 32, 3, 1 if cifar else 2)], 32
            for i, (t, c, n, s) in enumerate(self.SETTINGS):
                s = 1 if cifar and i == 1 else s
                for j in range(n):
                    layers.append(InvertedResidual(cin, c, s if j == 0 else 1, t))
                    cin = c
            layers.append(conv_bn_relu6(cin, 1280, 1, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    if name == "resnet18":
        return ResNet18()
    if name == "mobilenetv2":
        return MobileNetV2(cifar=side <= 32)
    raise ValueError(name)


def onnx_files(name: str, side: int, seed: int, folder: Path, formats: list[str]) -> dict[str, Path]:
    """The bench's model ``name`` at ``side`` x ``side``, quantized (:func:`quantize_files`)."""
    import torch

    torch.manual_seed(seed)
    model = build_model(name, side, 10 if side <= 32 else 1000)
    return quantize_files(model, f"{name}-{side}", side, seed, folder, formats)


def quantize_files(model, stem: str, side: int, seed: int, folder: Path, formats: list[str]) -> dict[str, Path]:
    """A float model with 3 x ``side`` x ``side`` input exported to ONNX (opset 17, symbolic
    batch) and quantized by onnxruntime's ``quantize_static`` in each format, per-channel."""
    import logging

    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(seed)
    images = rng.random((64, 3, side, side), dtype=np.float32)
    model.train()  # BatchNorm statistics of the images (no optimizer step)
    with torch.no_grad():
        for i in range(0, len(images), 16):
            model(torch.from_numpy(images[i:i + 16]))
    model.eval()
    float_path = folder / f"{stem}.float.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, side, side), str(float_path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          opset_version=17, dynamo=False)
    calib = rng.random((64, 3, side, side), dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.it, None)

    logging.getLogger().setLevel(logging.ERROR)  # the tool's "consider pre-processing" warnings
    out = {}
    for fmt in formats:
        path = folder / f"{stem}.ort-{fmt}.onnx"
        quantize_static(str(float_path), str(path), Reader(), quant_format=getattr(QuantFormat, FORMATS[fmt]),
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        out[fmt] = path
    return out


# ------------------------------------------------------------------------------- compile


def robustq_command() -> list[str]:
    """The ``robustq`` console script next to this interpreter (what a user runs), else the CLI
    module run by this interpreter."""
    script = Path(sys.executable).with_name("robustq")
    return [str(script)] if script.exists() else [sys.executable, "-m", "robustq_deploy.cli"]


def cli_env() -> dict[str, str]:
    """This checkout first on the path of the CLI subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


COMPILE_RECORD = "bench-compile.json"


def reused_build(onnx_path: Path, out: Path) -> tuple[dict | None, float, str] | None:
    """A build of exactly this ONNX file already in ``out`` (``--reuse``), as :func:`compile_cli`
    returned it then; None if there is none."""
    from robustq_deploy.manifest import sha256_file

    record = out / COMPILE_RECORD
    if not record.exists():
        return None
    rec = json.loads(record.read_text())
    if rec.get("onnx_sha256") != sha256_file(onnx_path) or rec.get("compiler_source") != compiler_source():
        return None
    if rec["error"]:
        return None, rec["compile_s"], rec["error"]
    manifest = json.loads((out / "manifest.json").read_text())
    entries = [a for a in manifest["artifacts"] if a["kind"] == "compiled"]
    if not entries or entries[-1]["meta"].get("source", {}).get("sha256") != rec["onnx_sha256"]:
        return None
    return entries[-1], rec["compile_s"], ""


def compiler_source() -> str:
    """sha256 over the compiler's Python source (``robustq_deploy/``, ``kernels/``, ``targets/``):
    a build is reused only when the code that made it is the code that would make it now."""
    import hashlib

    h = hashlib.sha256()
    for folder in ("robustq_deploy", "kernels", "targets"):
        for f in sorted((REPO / folder).rglob("*.py")):
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def compile_cli(onnx_path: Path, target: str, out: Path, reuse: bool = False) -> tuple[dict | None, float, str]:
    """``robustq compile ONNX --target TARGET --out OUT``: (the compiled artifact's manifest
    entry, wall seconds, the one-line error when it was refused). The outcome is recorded in
    ``OUT/bench-compile.json`` for ``--reuse``."""
    from robustq_deploy.manifest import atomic_write_text, sha256_file

    if reuse:
        found = reused_build(onnx_path, out)
        if found is not None:
            return found
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    done = subprocess.run([*robustq_command(), "compile", str(onnx_path), "--target", target, "--out", str(out)],
                          check=False, capture_output=True, text=True, env=cli_env())
    seconds = time.perf_counter() - t0
    error = ""
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        error = (errors or lines or [f"exit status {done.returncode}"])[-1][:500]
    atomic_write_text(out / COMPILE_RECORD, json.dumps({"onnx_sha256": sha256_file(onnx_path), "target": target,
                                                        "compiler_source": compiler_source(),
                                                        "compile_s": seconds, "error": error}))
    if error:
        return None, seconds, error
    manifest = json.loads((out / "manifest.json").read_text())
    entries = [a for a in manifest["artifacts"] if a["kind"] == "compiled"]
    return entries[-1], seconds, ""


LAYER_OPS = ("Conv", "MatMul", "Gemm", "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger")


def compile_record(onnx_path: Path, entry: dict) -> dict:
    """What the artifact records about the path each layer took."""
    import onnx

    meta = entry["meta"]
    graph_path = meta.get("compile_path", "not recorded")
    rewrites = meta.get("rewrites") or {}
    qdq = rewrites.get("qdq") if isinstance(rewrites.get("qdq"), dict) else rewrites
    fused = {str(item).split(" (")[0] for item in qdq.get("fused", [])} if isinstance(qdq, dict) else set()
    floats = {}
    for item in (qdq.get("float_layers", []) if isinstance(qdq, dict) else []):
        layer, _, why = str(item).partition(": ")
        floats[layer.split(" (")[0]] = why
    lowered = meta.get("layers") or {}
    layers = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        if node.op_type not in LAYER_OPS:
            continue
        name = node.name or node.output[0]
        if graph_path == "fused-network":
            layers[name] = "fused-network"
        elif name in floats:
            layers[name] = f"per-op float: {floats[name]}"
        elif name in lowered:
            layers[name] = f"per-op integer: {lowered[name]}"
        elif name in fused:
            layers[name] = "per-op integer"
        else:
            layers[name] = f"{graph_path} (nothing recorded for this layer)"
    recorded = graph_path == "fused-network" or bool(fused or floats or lowered)
    counts: dict[str, int] = {}
    for path in layers.values():
        key = path.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return {"graph": graph_path, "fused_refused": meta.get("fused_refused", ""), "per_layer_recorded": recorded,
            "layer_counts": counts, "layers": layers, "kernels": meta.get("kernels", {}), "float_compute": meta.get("float_compute", []),
            "integer_only": meta.get("integer_only"), "requant": meta.get("requant"),
            "requant_chains": rewrites.get("requant_chains")}


# ------------------------------------------------------------------------------- run


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare(ours, theirs) -> dict:
    import numpy as np

    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.shape != theirs.shape:
        return {"bit_exact": False, "max_abs_diff": None, "shape_ours": list(ours.shape), "shape_ort": list(theirs.shape)}
    diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    return {"bit_exact": bool(np.array_equal(ours, theirs)), "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "argmax_equal": float(np.mean(ours.argmax(-1) == theirs.argmax(-1)))}


def time_interleaved(engines: dict, runs: int, warmup: int, max_time_s: float,
                     pause_s: float = 0.0) -> dict[str, list[float]]:
    """Milliseconds per call, the engines alternating call by call (the first engine of each
    round alternates too), after ``warmup`` calls each. Each timed call waits until the process
    is idle, then ``pause_s``: onnxruntime's and TVM's worker threads poll after a call (TVM's for
    ~150 ms at its default spin count), and on a machine with as many cores as threads one
    engine's polling pool would otherwise slow the next (a fixed 20 ms pause did not: onnxruntime
    ran MobileNetV2-32 at batch 64 in 90 ms instead of 31)."""
    from robustq_deploy.runtime import wait_idle

    for fn in engines.values():
        for _ in range(warmup):
            fn()
    names = list(engines)
    times: dict[str, list[float]] = {k: [] for k in names}
    start = time.perf_counter()
    for r in range(runs):
        for name in (names if r % 2 == 0 else names[::-1]):
            wait_idle()
            time.sleep(pause_s)
            t0 = time.perf_counter()
            engines[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
        if max_time_s and r + 1 >= 5 and time.perf_counter() - start > max_time_s:
            break
    return times


def images(batch: int, side: int, seed: int):
    import numpy as np

    return np.random.default_rng([seed, batch, side]).random((batch, 3, side, side), dtype=np.float32)


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def bench_file(args, name: str, side: int, fmt: str, path: Path, folder: Path) -> None:
    """The rows of one quantized file: x86 (and aarch64 with ``--aarch64``)."""
    base = {"model": name, "input": [3, side, side], "format": fmt, "target": "x86", "quantizer": "onnxruntime.quantize_static",
            "per_channel": True, "threads": args.threads}
    batches = [int(b) for b in args.batches.split(",")]
    if not args.aarch64_only:
        bench_x86(args, base, name, side, fmt, path, folder, batches)
    if args.aarch64 or args.aarch64_only:
        bench_aarch64(args, base, path, folder, batches)


def bench_x86(args, base: dict, name: str, side: int, fmt: str, path: Path, folder: Path, batches: list[int]) -> None:
    """``robustq compile --target x86``, then per batch bit-exactness and interleaved timing."""
    import numpy as np

    import robustq_deploy

    log(f"== {name} {side}x{side} {fmt}: robustq compile --target x86")
    out = folder / f"{path.stem}.x86"
    reused = args.reuse and reused_build(path, out) is not None
    entry, seconds, error = compile_cli(path, "x86", out, args.reuse)
    base = {**base, "compile_s": round(seconds, 1), "compile_reused": reused, "pause_ms": args.pause_ms}
    if entry is None:
        for batch in batches:
            emit({**base, "batch": batch, "error": error, "load_avg": load_average()})
        log(f"   refused ({seconds:.0f} s): {error}")
    else:
        record = compile_record(path, entry)
        log(f"   {'reused the build made' if reused else 'compiled'} in {seconds:.0f} s, path {record['graph']}")
        ours = robustq_deploy.load(folder / f"{path.stem}.x86" / entry["path"], threads=args.threads)
        sess = ort_session(path, args.threads)
        for batch in batches:
            x = images(batch, side, args.seed)
            row = {**base, "batch": batch}
            try:
                want = sess.run(None, {"input": x})[0]
                row.update(compare(ours(x), want))
                times = time_interleaved({"onnxruntime": lambda x=x: sess.run(None, {"input": x}), "ours": lambda x=x: ours(x)},
                                         args.runs, args.warmup, args.max_time_s, args.pause_ms / 1e3)
            except Exception as exc:  # noqa: BLE001  (a refusal at run time is a row too)
                row["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
                emit({**row, "compile_path": record, "load_avg": load_average()})
                continue
            ort_ms, ours_ms = float(np.median(times["onnxruntime"])), float(np.median(times["ours"]))
            row.update({"onnxruntime_ms": round(ort_ms, 4), "ours_ms": round(ours_ms, 4),
                        "ratio": round(ours_ms / ort_ms, 3), "runs": len(times["ours"]),
                        "ours_p10_p90_ms": [round(float(np.percentile(times["ours"], q)), 4) for q in (10, 90)],
                        "onnxruntime_p10_p90_ms": [round(float(np.percentile(times["onnxruntime"], q)), 4) for q in (10, 90)],
                        "compile_path": record, "load_avg": load_average()})
            emit(row)
            log(f"   batch {batch}: ours {ours_ms:.3f} ms, onnxruntime {ort_ms:.3f} ms, ratio {ours_ms / ort_ms:.2f}, "
                f"bit-exact {row['bit_exact']} (max abs diff {row['max_abs_diff']})")


def bench_aarch64(args, base: dict, path: Path, folder: Path, batches: list[int]) -> None:
    """``robustq compile --target aarch64`` and bit-exactness under qemu against onnxruntime."""
    import robustq_deploy

    base = {**base, "target": "aarch64", "emulated": "qemu-aarch64"}
    base.pop("threads")
    missing = [t for t in ("aarch64-linux-gnu-gcc", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        emit({**base, "skipped": f"not installed: {', '.join(missing)}"})
        return
    log("   robustq compile --target aarch64")
    entry, seconds, error = compile_cli(path, "aarch64", folder / f"{path.stem}.aarch64", args.reuse)
    base["compile_s"] = round(seconds, 1)
    if entry is None:
        for batch in batches:
            emit({**base, "batch": batch, "error": error})
        return
    record = compile_record(path, entry)
    sess = ort_session(path, args.threads)
    try:
        ours = robustq_deploy.load(folder / f"{path.stem}.aarch64" / entry["path"], threads=args.threads)
    except Exception as exc:  # noqa: BLE001  (the emulated runner's refusal is the row)
        for batch in batches:
            emit({**base, "batch": batch, "error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]})
        return
    for batch in batches:
        x = images(batch, base["input"][1], args.seed)
        row = {**base, "batch": batch}
        try:
            row.update(compare(ours(x), sess.run(None, {"input": x})[0]))
        except Exception as exc:  # noqa: BLE001
            row["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        emit({**row, "compile_path": record})
        log(f"   aarch64 batch {batch}: {row.get('bit_exact', row.get('error'))}")


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read when a library's OpenMP pool starts
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    for f in formats:
        if f not in FORMATS:
            raise SystemExit(f"unknown format {f!r}; choose from {', '.join(FORMATS)}")
    for m in models:
        if m not in {c[0] for c in CASES}:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(sorted({c[0] for c in CASES}))}")
    cases = [(m, s) for m, s in CASES if m in models and s in sizes]
    if not cases:
        raise SystemExit("no case left: ResNet-18 is benched at 32 only, MobileNetV2 at 32 and 224")
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="robustq-foreign-") as tmp:
        folder = Path(args.work) if args.work else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, side in cases:
            files = onnx_files(name, side, args.seed, folder, formats)
            for fmt, path in files.items():
                bench_file(args, name, side, fmt, path, folder)


if __name__ == "__main__":
    main()
