"""Training cost of every method per step, side by side in one process.

    python bench/train_cost.py [--arch mnist-small] [--bits 8] [--act-bits 8] [--methods natural,qat,...]
                               [--steps 20] [--rounds 5] [--batch 64] [--threads 1]

``bench/methods.py`` reports each row's training wall time over its natural reference, but its
rows run one after another, possibly beside other jobs on a shared machine, so those ratios
move with the load. This bench measures the same training steps under the same conditions:
each method (its registered :class:`~robustq_deploy.train.base.Method`, prepared as the
training loop prepares it, on real MNIST batches at the full training eps of 0.3) runs
``--steps`` optimizer steps per round, the methods interleaved round by round, and the median
over ``--rounds`` rounds of the milliseconds per step is reported with its ratio to the
reference: ``qat`` (natural training of the same quantized model), and ``natural`` for float
(``--bits float``). The ratio is the median of the per-round ratios (each round times every
method back to back, so a load change on a shared machine hits both sides of a round's ratio),
with its 10th and 90th percentiles. One JSON object per method goes to stdout (``arch, bits,
act_bits, method, ms_per_step, p10_ms, p90_ms, ratio, ratio_p10, ratio_p90, reference``) and, with the
command, to ``--jsonl`` (default ``bench/results/train-cost.jsonl``, replacing earlier rows of the
same arch and widths), which ``bench/methods.py`` shows in ``docs/methods.md`` and
``bench/claim_odgq.py`` uses for the ODG-Q cost claim on ``docs/results.md``; a table goes to stderr.

Each method is configured as ``bench/methods.py`` configures its rows (its ``run_config``: PGD-10
inside pgd-at and trades, dq with fast adversarial training), on 4096 training examples.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from methods import PRESETS, VARIANTS, run_config  # noqa: E402
from robustq_deploy.config import RunConfig  # noqa: E402
from robustq_deploy.manifest import atomic_write_text  # noqa: E402
from robustq_deploy.models import build_model  # noqa: E402
from robustq_deploy.train.base import PrepareContext, StepContext, make_method  # noqa: E402
from robustq_deploy.checkpoint import load_split  # noqa: E402

# lwq is a float teacher plus fine-tuning with fgsm-rs steps: its per-step cost is fgsm-rs's
METHODS = ("natural", "qat", "fgsm-rs", "odgq", "dq", "binary-relax", "pgd-at", "trades")


def config(method: str, arch: str, bits, batch: int, threads: int, data_dir: str | None,
           act_bits: int = 8) -> RunConfig:
    preset = replace(PRESETS["small"], arch=arch, train_limit=4096, test_limit=1, epochs=1, batch_size=batch)
    cfg = run_config("mnist", method, bits, preset, data_dir, threads, None)
    if bits != "float" and act_bits != cfg.quant.act_bits:
        cfg = replace(cfg, quant=replace(cfg.quant, act_bits=act_bits))
    return cfg


class Runner:
    """One method's model, optimizer and state, stepping on the same batches as the others."""

    def __init__(self, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor):
        torch.manual_seed(0)
        self.cfg, self.x, self.y = cfg, x, y
        self.model = build_model(cfg.model.arch, cfg.quant, 10, tuple(x.shape[1:]))
        self.method = make_method(cfg.train)
        self.model = self.method.prepare(self.model, PrepareContext(cfg, x, y, torch.device("cpu"), False))
        self.method.before_epoch(self.model, 0)
        self.model.train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)
        self.gen = torch.Generator().manual_seed(0)
        self.step = 0

    def run(self, steps: int) -> float:
        """Milliseconds per step over ``steps`` steps."""
        b = self.cfg.train.batch_size
        t0 = time.perf_counter()
        for _ in range(steps):
            idx = torch.arange(self.step * b, (self.step + 1) * b) % len(self.x)
            ctx = StepContext(0, self.step, self.cfg.train.attack.eps, self.gen, idx)
            loss = self.method.loss(self.model, self.x[idx], self.y[idx], ctx)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.method.after_backward(self.model, ctx)
            self.opt.step()
            self.step += 1
        return (time.perf_counter() - t0) / steps * 1e3


def _pick(sorted_values: list[float], quantile: float) -> float:
    return sorted_values[int(quantile * (len(sorted_values) - 1))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mnist-small")
    ap.add_argument("--bits", default="8", help="Weight bits (8, 4, ternary, binary) or float.")
    ap.add_argument("--act-bits", type=int, choices=(2, 4, 8), default=8,
                    help="Activation bits of the quantized models (ignored for float).")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--jsonl", type=Path, default=REPO / "bench" / "results" / "train-cost.jsonl")
    args = ap.parse_args(argv)
    bits = int(args.bits) if args.bits.isdigit() else args.bits
    unknown = [m for m in args.methods.split(",") if m not in VARIANTS]
    if unknown:
        ap.error(f"unknown method: {', '.join(unknown)}")
    methods = [m for m in args.methods.split(",")
               if (VARIANTS[m].float_ok if bits == "float" else VARIANTS[m].quant_ok)]
    reference = "natural" if bits == "float" else "qat"
    if reference not in methods:
        methods.insert(0, reference)
    torch.set_num_threads(args.threads)
    act_bits = 32 if bits == "float" else args.act_bits
    cfgs = {m: config(m, args.arch, bits, args.batch, args.threads, args.data_dir, act_bits) for m in methods}
    x, y, _ = load_split(cfgs[reference], "train")
    runners = {m: Runner(c, x, y) for m, c in cfgs.items()}
    for r in runners.values():  # warm-up
        r.run(3)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for i in range(args.rounds):
        for m, r in runners.items():
            times[m].append(r.run(args.steps))
        print(f"round {i + 1}/{args.rounds}", file=sys.stderr, flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    ratios = {m: sorted(a / b for a, b in zip(times[m], times[reference])) for m in methods}
    command = "python bench/train_cost.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    rows = []
    for m in methods:
        t, q = sorted(times[m]), ratios[m]
        rows.append({"arch": args.arch, "bits": bits, "act_bits": act_bits, "method": m, "ms_per_step": round(med[m], 2),
                     "p10_ms": round(_pick(t, 0.1), 2), "p90_ms": round(_pick(t, 0.9), 2),
                     "ratio": round(statistics.median(q), 2), "ratio_p10": round(_pick(q, 0.1), 2),
                     "ratio_p90": round(_pick(q, 0.9), 2), "reference": reference, "batch": args.batch,
                     "steps": args.steps, "rounds": args.rounds, "threads": args.threads, "command": command})
        print(json.dumps(rows[-1]), flush=True)
    old = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()] if args.jsonl.exists() else []
    kept = [r for r in old if (r["arch"], r["bits"], r.get("act_bits", 32 if r["bits"] == "float" else 8))
            != (args.arch, bits, act_bits)]
    atomic_write_text(args.jsonl, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept + rows))
    print(f"\n{'method':<14}{'ms/step':>10}{'x ' + reference:>10}", file=sys.stderr)
    for r in rows:
        print(f"{r['method']:<14}{r['ms_per_step']:>10.2f}{r['ratio']:>10.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
