"""Every robust-training method at every bit width, measured against each other.

    python bench/methods.py [--quick] [--datasets mnist,fashion-mnist] [--bits float,8,4,ternary,binary]
                            [--methods natural,qat,...] [--jsonl FILE] [--work DIR] [--results-md FILE]

Trains ``mnist-cnn`` (``mnist-small`` in the ``small`` preset) with each method on MNIST (L-inf
eps 0.3) and Fashion-MNIST (eps 0.1) at each weight bit width (activations 8-bit; ``float`` rows
are the 32-bit references), then measures clean accuracy on the test split and robust accuracy on
its first ``robust_limit`` points with verify's attack ensemble of the preset's budget
(:data:`robustq_deploy.verify.plan.BUDGETS`; ``standard``: APGD-CE, APGD-T with 9 target classes,
then Square with 5000 queries, AutoAttack's standard version) on the twin, each attack on the
points still robust: the per-point worst case, and beside it the white-box attacks alone (where
Square breaks more, gradients are masked). Rows record the attacks that scored them (``attacks``;
rows from before the budgets used PGD-40 with restarts and Square). Each finished row is appended to a JSON-lines
file (keys: dataset, method, bits, eps, clean_acc, robust_acc, train_seconds,
natural_train_seconds, plus details) and printed; rows already in the file are skipped, and a row
stopped part-way goes on after its last finished epoch (its training state sits beside its
checkpoint, :mod:`robustq_deploy.train.resume`), so an interrupted run resumes where it stopped.
``docs/methods.md`` is rewritten after every row from all rows files in ``bench/results/`` (one
per preset): per preset the commands, the tables, the seeds, and the error-amplification plot
(float / quantized / DQ, PNG next to the page). The seed papers' claims are tested elsewhere, each
in the regime where it can show and with paired statistics: ``bench/claims.py`` and the
``bench/claim_*.py`` experiments, on ``docs/results.md``.

Presets: ``full`` (all training data, 10 epochs; many hours on 2 cores), ``standard`` (the same
on a 20k-example training subset), ``small`` (all training data, 10 epochs, with the 7x cheaper
``mnist-small`` network of fast adversarial training), ``small-tuned`` (``small`` at that work's
learning rate 5e-3, MNIST int8 only), ``small-long`` (``small-tuned`` for 15 epochs),
``small-warm`` (``small-tuned`` with a 5-epoch eps warm-up), ``quick``
(2k examples, 2 epochs, 4-bit, every method; under 30 minutes on 2 cores).

Time reference: ``natural_train_seconds`` is natural training of the same model in the same
JSON-lines file: the ``natural`` row for float, the ``qat`` row (natural training of the
quantized model) for quantized rows, which therefore run first. ``lwq`` starts from the
``fgsm-rs`` float model (trained first when missing) and its time includes that teacher's.
Training uses a GPU when one is present (``train.device = "auto"``); the attacks run on the CPU.
Threads: ``--threads`` (default 1, the fastest setting on a shared 2-core machine).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robustq_deploy.config import RunConfig, from_dict  # noqa: E402
from robustq_deploy.validation import validate  # noqa: E402
from robustq_deploy.manifest import atomic_write_text  # noqa: E402

EPS = {"mnist": 0.3, "fashion-mnist": 0.1}
EQUAL_SIZE = 0.9  # lwq holds at least this fraction of the uniform model's size (its min_fill)
ALL_BITS = ("float", 8, 4, "ternary", "binary")


@dataclass(frozen=True)
class Variant:
    """A bench row's training: a registered method with its params, and where it applies."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    float_ok: bool = True  # a float row of it is meaningful
    quant_ok: bool = True


VARIANTS: dict[str, Variant] = {
    "natural": Variant("natural", quant_ok=False),  # natural quantized training is the qat row
    "qat": Variant("qat", float_ok=False),
    "pgd-at": Variant("pgd-at"),
    "trades": Variant("trades", float_ok=False),
    "fgsm-rs": Variant("fgsm-rs"),
    "dq": Variant("dq", {"adv": "fgsm-rs"}, float_ok=False),  # DQ combined with fast AT; compare with fgsm-rs
    "odgq": Variant("odgq"),
    "lwq": Variant("lwq", {"min_fill": EQUAL_SIZE}, float_ok=False),  # compared with lwq-uniform at equal size
    "lwq-uniform": Variant("lwq", {"allocation": "uniform"}, float_ok=False),  # the equal-size baseline
    "binary-relax": Variant("binary-relax"),
    "ibp": Variant("ibp", float_ok=False),  # certified training; its certified numbers: bench/certify.py
}


@dataclass(frozen=True)
class Preset:
    datasets: tuple[str, ...]
    bits: tuple[Any, ...]
    epochs: int
    train_limit: int | None
    test_limit: int | None
    robust_limit: int
    budget: str = "standard"  # verify's attack budget (robustq_deploy.verify.plan.BUDGETS)
    batch_size: int = 64
    lr: float = 1e-3
    eps_warmup_epochs: int = 3
    train_steps: int = 10  # PGD steps of pgd-at and trades
    arch: str = "mnist-cnn"
    ema_decay: float = 0.0  # weight averaging of every method (train.ema_decay)


PRESETS = {
    # the grid on all training data; many hours on 2 cores (resumable)
    "full": Preset(("mnist", "fashion-mnist"), ALL_BITS, epochs=10, train_limit=None, test_limit=None,
                   robust_limit=1000),
    # the same grid on a 20k-example training subset: what 2 shared cores afford per row
    "standard": Preset(("mnist", "fashion-mnist"), ALL_BITS, epochs=8, train_limit=20000, test_limit=None,
                       robust_limit=500),
    # the grid on all training data with the 7x cheaper network of fast adversarial
    # training (mnist-small): what 2 cores afford for PGD-10 training on all 60k examples
    "small": Preset(("mnist", "fashion-mnist"), ALL_BITS, epochs=10, train_limit=None, test_limit=None,
                    robust_limit=1000, arch="mnist-small"),
    # the small preset at the learning rate fast adversarial training uses for this network (Adam,
    # peak 5e-3): 1e-3 underfits robust training at eps 0.3 (an odgq int8 pilot: 88.2% -> 92.0%
    # PGD-40); int8 MNIST, the rows of the odgq-vs-pgd-at criterion
    "small-tuned": Preset(("mnist",), (8,), epochs=10, train_limit=None, test_limit=None, robust_limit=1000,
                          lr=5e-3, arch="mnist-small"),
    # small-tuned trained 15 epochs instead of 10
    "small-long": Preset(("mnist",), (8,), epochs=15, train_limit=None, test_limit=None, robust_limit=1000,
                         lr=5e-3, arch="mnist-small"),
    # small-tuned with the training eps ramped over 5 epochs instead of 3: in pilots the ramp's
    # end destabilised one odgq seed of small-tuned (80.4% worst case against 87.1 and 87.7); with
    # the longer ramp the three seeds gave 87.1, 86.4 and 86.5
    "small-warm": Preset(("mnist",), (8,), epochs=10, train_limit=None, test_limit=None, robust_limit=1000,
                         lr=5e-3, eps_warmup_epochs=5, arch="mnist-small"),
    # every method once at 4 bits (lwq's float teacher and its natural reference come along),
    # under 30 minutes on 2 cores
    "quick": Preset(("mnist",), (4,), epochs=2, train_limit=2000, test_limit=1000,
                    robust_limit=200, eps_warmup_epochs=1, budget="fast"),
}


def bits_key(bits: Any) -> str:
    return str(bits)


def parse_bits(text: str) -> Any:
    return int(text) if text.isdigit() else text


def run_config(dataset: str, label: str, bits: Any, preset: Preset, data_dir: str | None, threads: int,
               teacher: Path | None, seed: int = 0) -> RunConfig:
    v = VARIANTS[label]
    wb, ab = (32, 32) if bits == "float" else (bits, 8)
    params = dict(v.params)
    if teacher is not None:
        params["teacher"] = str(teacher)
    return validate(from_dict(RunConfig, {
        "name": f"bench-{dataset}-{label}-{bits}",
        "data": {"dataset": dataset, "data_dir": data_dir, "train_limit": preset.train_limit,
                 "test_limit": preset.test_limit},
        "model": {"arch": preset.arch},
        "quant": {"weight_bits": wb, "act_bits": ab},
        "train": {"method": v.method, "epochs": preset.epochs, "batch_size": preset.batch_size, "lr": preset.lr,
                  "eps_warmup_epochs": preset.eps_warmup_epochs, "ema_decay": preset.ema_decay, "threads": threads,
                  "seed": seed, "params": params,
                  "attack": {"eps": EPS[dataset], "steps": preset.train_steps}},
    }))


def robust_eval(model, x: torch.Tensor, y: torch.Tensor, eps: float, preset: Preset, batch: int = 250) -> dict[str, Any]:
    """Verify's attack ensemble of the preset's budget on the twin, each attack on the points still
    robust; the per-point worst case, and the white-box attacks alone."""
    from robustq_deploy.attacks import run_ensemble
    from robustq_deploy.config import VerifyConfig
    from robustq_deploy.verify.plan import build_plan
    from robustq_deploy.verify.state import seeded_generator

    model = model.cpu().eval()
    plan = build_plan(VerifyConfig(budget=preset.budget, eps=eps))
    codes = []
    for i in range(0, len(x), batch):
        res = run_ensemble(plan.attacks, {"white-box": model}, {"twin": model}, x[i:i + batch], y[i:i + batch],
                           plan.threat, lambda key, i=i: seeded_generator(0, f"b{i}", key))
        codes.append(res.code["twin"])
    code = torch.cat(codes)
    white = [k + 1 for k, a in enumerate(plan.attacks) if a.access != "query"]
    broken_white = torch.isin(code, torch.tensor(white)) | (code == 0)
    names = [f"{a.name}" + (f" x{a.params.restarts}" if getattr(a.params, "restarts", 1) > 1 else "")
             + (f" {a.params.queries} queries" if hasattr(a.params, "queries") else "") for a in plan.attacks]
    return {"robust_acc_pgd": float((~broken_white).float().mean()), "robust_n": len(x),
            "robust_acc": float((code == -1).float().mean()), "square": any(a.access == "query" for a in plan.attacks),
            "attacks": f"budget {preset.budget}: {', '.join(names)} (worst case per point)"}


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One complete JSON line per finished row (a killed run loses only the row in progress)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()


def plan(datasets, bits_list, labels) -> list[tuple[str, str, Any]]:
    """Rows in dependency order: per dataset, widths from float down; at each width its time
    reference (natural at float, qat when quantized) first; the fgsm-rs float teacher (with its
    natural reference) whenever an lwq row is asked for."""
    needs_teacher = any(VARIANTS[lb].method == "lwq" for lb in labels) and any(b != "float" for b in bits_list)
    widths = sorted(set(bits_list) | ({"float"} if needs_teacher else set()), key=ALL_BITS.index)
    rows = []
    for ds in datasets:
        for bits in widths:
            if bits == "float":
                wanted = (labels if "float" in bits_list else []) + (["fgsm-rs"] if needs_teacher else [])
            else:
                wanted = labels
            ref = "natural" if bits == "float" else "qat"
            for lb in dict.fromkeys([ref] + wanted):
                v = VARIANTS[lb]
                if v.float_ok if bits == "float" else v.quant_ok:
                    rows.append((ds, lb, bits))
    return rows


def seed_suffix(seed: int) -> str:
    return f"-seed{seed}" if seed else ""


def run_row(ds: str, label: str, bits: Any, preset: Preset, args, done: dict, command: str) -> dict[str, Any]:
    from robustq_deploy.train import save_checkpoint, train_model
    from robustq_deploy.checkpoint import load_split
    from robustq_deploy.train.resume import state_path_for

    teacher_row = done.get((ds, "fgsm-rs", "float")) if VARIANTS[label].method == "lwq" else None
    teacher = Path(teacher_row["checkpoint"]) if teacher_row else None
    cfg = run_config(ds, label, bits, preset, args.data_dir, args.threads, teacher, args.seed)
    ckpt = args.work / args.preset / ds / f"{label}-{bits}{seed_suffix(args.seed)}.safetensors"
    # a row stopped part-way (hours long on a CPU) goes on from its last finished epoch
    model, metrics, rcfg = train_model(cfg, progress=not args.quiet, state_path=state_path_for(ckpt))
    save_checkpoint(model, rcfg, ckpt, metrics)
    state_path_for(ckpt).unlink(missing_ok=True)
    seconds = metrics["train_seconds"] + (teacher_row["train_seconds"] if teacher_row else 0.0)
    cpu = metrics["train_cpu_seconds"] + (teacher_row["train_cpu_seconds"] if teacher_row else 0.0)
    ref = done.get((ds, "natural" if bits == "float" else "qat", bits))
    tx, ty, _ = load_split(cfg, "test")
    n = min(preset.robust_limit, len(tx))
    row = {"preset": args.preset, "seed": args.seed, "command": command, "dataset": ds, "method": label, "bits": bits,
           "eps": EPS[ds],
           "clean_acc": metrics["test_acc"], "train_seconds": round(seconds, 1),
           "natural_train_seconds": round(ref["train_seconds"], 1) if ref else round(seconds, 1),
           "train_cpu_seconds": round(cpu, 1),
           "natural_train_cpu_seconds": round(ref["train_cpu_seconds"], 1) if ref else round(cpu, 1),
           "epochs": preset.epochs, "train_limit": preset.train_limit, "test_n": len(tx),
           "params": cfg.train.params, "checkpoint": str(ckpt), "device": str(cfg.train.device),
           "diagnostics": metrics["diagnostics"]}
    for key in ("channel_sparsity", "channel_sparsity_per_layer", "lwq", "orthogonality"):
        if key in metrics:
            row[key] = metrics[key]
    if teacher_row:
        row["teacher_seconds"] = teacher_row["train_seconds"]
    row.update(robust_eval(model, tx[:n], ty[:n], EPS[ds], preset))
    row["time_ratio"] = round(row["train_seconds"] / max(row["natural_train_seconds"], 1e-9), 2)
    row["cpu_time_ratio"] = round(row["train_cpu_seconds"] / max(row["natural_train_cpu_seconds"], 1e-9), 2)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full")
    ap.add_argument("--quick", action="store_const", const="quick", dest="preset", help="The quick preset.")
    ap.add_argument("--datasets", help="Comma-separated subset of the preset's datasets.")
    ap.add_argument("--bits", help="Comma-separated subset of float,8,4,ternary,binary.")
    ap.add_argument("--methods", help=f"Comma-separated subset of {','.join(VARIANTS)}.")
    ap.add_argument("--jsonl", type=Path, default=None, help="Rows file (default bench/results/methods-PRESET.jsonl).")
    ap.add_argument("--work", type=Path, default=Path("/tmp/robustq-bench-methods"), help="Checkpoints go here.")
    ap.add_argument("--results-md", type=Path, default=REPO / "docs" / "methods.md")
    ap.add_argument("--data-dir", default=None, help="Folder with the dataset files ($ROBUSTQ_DATA_DIR).")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0,
                    help="Training seed; a seed other than 0 writes its own rows file (methods-PRESET-seedN.jsonl), "
                         "whose rows the page shows per seed next to seed 0's.")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    preset = PRESETS[args.preset]
    datasets = args.datasets.split(",") if args.datasets else list(preset.datasets)
    bits_list = [parse_bits(b) for b in args.bits.split(",")] if args.bits else list(preset.bits)
    labels = args.methods.split(",") if args.methods else list(VARIANTS)
    bad = [lb for lb in labels if lb not in VARIANTS] + [b for b in bits_list if b not in ALL_BITS] \
        + [d for d in datasets if d not in EPS]
    if bad:
        ap.error(f"unknown method, bit width or dataset: {', '.join(map(str, bad))}")
    if args.seed < 0:
        ap.error("--seed must be >= 0")
    jsonl = args.jsonl or REPO / "bench" / "results" / f"methods-{args.preset}{seed_suffix(args.seed)}.jsonl"
    command = "python bench/methods.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    for ds, label, bits in plan(datasets, bits_list, labels):
        done = {(r["dataset"], r["method"], r["bits"]): r for r in read_rows(jsonl)}
        if (ds, label, bits) in done:
            continue
        t0 = time.perf_counter()
        row = run_row(ds, label, bits, preset, args, done, command)
        row["row_seconds"] = round(time.perf_counter() - t0, 1)
        append_row(jsonl, row)
        print(json.dumps({k: row[k] for k in ("dataset", "method", "bits", "eps", "clean_acc", "robust_acc",
                                              "train_seconds", "natural_train_seconds")}), flush=True)
        write_results(jsonl, args.results_md)
    write_results(jsonl, args.results_md)
    return 0


# --------------------------------------------------------------------------- docs/methods.md


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _seed(r: dict[str, Any]) -> int:
    return r.get("seed", 0)


def _seeds(rows, ds, method, bits) -> list[dict[str, Any]]:
    """The rows of one method and width, one per seed, by seed."""
    return sorted((r for r in rows if r["dataset"] == ds and r["method"] == method and r["bits"] == bits), key=_seed)


def _find(rows, ds, method, bits):
    """The seed-0 row (the one the tables and single-row claims use)."""
    return next((r for r in _seeds(rows, ds, method, bits) if _seed(r) == 0), None)


def seeds_table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows trained at more than one seed: every seed's numbers and their mean and spread."""
    keys = dict.fromkeys((r["dataset"], r["method"], r["bits"]) for r in rows)
    out = ["| dataset | method | bits | seeds | clean % per seed | worst-case robust % per seed | robust mean | "
           "robust sd |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for ds, method, bits in keys:
        group = _seeds(rows, ds, method, bits)
        if len(group) < 2:
            continue
        vals = [r["robust_acc"] for r in group]
        mean = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        out.append(f"| {ds} | {method} | {bits} | {', '.join(str(_seed(r)) for r in group)} | "
                   f"{', '.join(_pct(r['clean_acc']) for r in group)} | {', '.join(_pct(v) for v in vals)} | "
                   f"{_pct(mean)} | {100 * sd:.1f} |")
    return out if len(out) > 2 else []


MASKING_GAP = 0.02  # Square (black-box) breaking this many more points than PGD flags gradient masking


def _notes(r: dict[str, Any]) -> str:
    notes = []
    if r.get("square") and r["robust_acc_pgd"] - r["robust_acc"] >= MASKING_GAP:
        notes.append(f"Square breaks {100 * (r['robust_acc_pgd'] - r['robust_acc']):.1f} points the white-box attacks left standing: "
                     "gradient masking suspected")
    if "channel_sparsity" in r:
        notes.append(f"channel sparsity {_pct(r['channel_sparsity'])}%")
    if "lwq" in r:
        chosen = ", ".join(f"{layer['layer']}:{layer['bits']}" + (f"@{layer['clip']}" if layer["clip"] else "")
                           for layer in r["lwq"]["layers"])
        notes.append(f"{r['lwq']['bits_per_weight']:.2f} bits/weight ({chosen})")
    if "teacher_seconds" in r:
        notes.append(f"incl. {r['teacher_seconds']:.0f} s float teacher")
    return "; ".join(notes)


def table(rows: list[dict[str, Any]], ds: str) -> list[str]:
    out = ["| method | bits | clean % | robust % (PGD) | robust % (worst case) | train s | natural s | time x natural "
           "| CPU time x natural | notes |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {lb: i for i, lb in enumerate(VARIANTS)}
    for r in sorted((r for r in rows if r["dataset"] == ds),
                    key=lambda r: (ALL_BITS.index(r["bits"]), order.get(r["method"], 99))):
        worst = r["robust_acc"] if r.get("square") else None
        out.append(f"| {r['method']} | {r['bits']} | {_pct(r['clean_acc'])} | {_pct(r['robust_acc_pgd'])} | "
                   f"{_pct(worst)} | {r['train_seconds']:.0f} | {r['natural_train_seconds']:.0f} | "
                   f"{r['time_ratio']:.2f} | {r['cpu_time_ratio']:.2f} | {_notes(r)} |")
    return out


def read_cost() -> list[dict[str, Any]]:
    """Rows of ``bench/train_cost.py`` (per-step cost of every method, side by side in one run)."""
    return read_rows(REPO / "bench" / "results" / "train-cost.jsonl")


def cost_table(cost: list[dict[str, Any]]) -> list[str]:
    out = ["| model | weight / activation bits | method | ms per step (median) | p10-p90 ms | x natural (median of rounds) | p10-p90 |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in cost:
        spread = f"{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}" if "ratio_p10" in r else "-"
        widths = "float" if r["bits"] == "float" else f"{r['bits']} / {r.get('act_bits', 8)}"
        out.append(f"| {r['arch']} | {widths} | {r['method']} | {r['ms_per_step']:.1f} | {r['p10_ms']:.1f}-{r['p90_ms']:.1f} "
                   f"| {r['ratio']:.2f} ({r['reference']} = 1) | {spread} |")
    return out


def amplification_plots(rows: list[dict[str, Any]], md_path: Path, preset: str) -> list[str]:
    """Per dataset, error amplification of the float model, the plainly quantized one, and the
    adversarially trained quantized model without and with DQ, at the lowest width where the
    quantized rows exist; returns the markdown lines referencing the PNGs."""
    from robustq_deploy.train.diagnostics import plot_diagnostics

    lines = []
    for ds in EPS:
        flt = _find(rows, ds, "natural", "float")
        for bits in reversed(ALL_BITS[1:]):
            picked = {"float (natural)": flt, f"{bits} (qat)": _find(rows, ds, "qat", bits),
                      f"{bits} (fgsm-rs)": _find(rows, ds, "fgsm-rs", bits),
                      f"{bits} (dq + fgsm-rs)": _find(rows, ds, "dq", bits)}
            if flt and picked[f"{bits} (qat)"] and picked[f"{bits} (dq + fgsm-rs)"]:
                png = md_path.parent / f"results-amplification-{preset}-{ds}.png"
                plot_diagnostics({label: r["diagnostics"] for label, r in picked.items() if r}, png,
                                 title=f"{ds}: perturbation eps * sign(grad), eps {flt['diagnostics']['eps']}")
                lines += [f"![error amplification, {ds}]({png.name})", ""]
                break
    return lines


def render(rows: list[dict[str, Any]], md_path: Path, cost: list[dict[str, Any]] | None = None) -> str:
    """The whole page: the side-by-side training cost (rows of ``bench/train_cost.py``), then per
    preset (full, standard, small, quick) its commands, settings, tables and seeds."""
    lines = ["# Robust quantization-aware training: methods compared", "",
             "Generated by `bench/methods.py` from its JSON-lines files in `bench/results/` (do not edit by hand). "
             "Model per preset (`mnist-cnn` or the smaller `mnist-small`), activations 8-bit, weights at the given "
             "width (`float`: the 32-bit reference).", "",
             "Each preset names the attacks that scored its rows. Rows scored before the verify stage's budgets "
             "(PGD-40 with restarts, then Square with 300 or 1000 queries) overstate robustness next to the "
             "standard ensemble (APGD-CE, APGD-T, Square-5000) that newer rows use. The seed papers' claims are "
             "tested in [`results.md`](results.md), each in the regime where it can show, with paired statistics "
             "and several seeds; this page is the grid of every method at every width.", "",
             "`time x natural`: training wall time over natural training of the same model in the same rows "
             "file (`natural` for float, `qat` for quantized widths); `CPU time x natural`: the same for the "
             "process CPU time, which other jobs on a shared machine disturb less. `lwq` includes its float "
             "teacher (the `fgsm-rs` float row). Where the black-box Square attack breaks "
             f"{100 * MASKING_GAP:.0f} or more percentage points of the robust test points that white-box PGD left standing, the row's notes flag "
             "suspected gradient masking: its PGD number overstates the robustness, the worst case is the one "
             "to trust.", ""]
    if cost:
        lines += ["## Training cost per step, side by side", "",
                  "Every method's training step on the same MNIST batches (eps 0.3), interleaved in one process, "
                  "median over rounds; the ratio is to natural training of the same model (`qat` when quantized), the median "
                  "of the per-round ratios with their 10th-90th percentiles. "
                  "Commands:", ""]
        lines += [f"    {c}" for c in dict.fromkeys(r.get("command", "?") for r in cost)] + [""] + cost_table(cost) + [""]
    for name in [p for p in PRESETS if any(r["preset"] == p for r in rows)]:
        every = [r for r in rows if r["preset"] == name]
        part = [r for r in every if _seed(r) == 0]
        p = PRESETS[name]
        lines += [f"## Preset `{name}`", "", "Commands that produced these rows:", ""]
        lines += [f"    {c}" for c in dict.fromkeys(r.get("command", "?") for r in every)] + [""]
        lines += [f"Model `{p.arch}`. Training: {p.epochs} epochs on {p.train_limit or 'all'} training examples, batch {p.batch_size}, "
                  f"Adam lr {p.lr}, eps warm-up over {p.eps_warmup_epochs} epochs, "
                  + (f"weight average (EMA decay {p.ema_decay}), " if p.ema_decay else "")
                  + f"PGD-{p.train_steps} inside pgd-at "
                  f"and trades. Clean accuracy on {every[0]['test_n']} test points; robust accuracy on the first "
                  f"{p.robust_limit}, each attack on the points still robust: "
                  + "; ".join(sorted({r.get("attacks", "?") for r in part})) + ".", ""]
        for ds in EPS:
            if any(r["dataset"] == ds for r in part):
                lines += [f"### {ds} (L-inf eps {EPS[ds]})", ""] + table(part, ds) + [""]
        seeds = seeds_table(every)
        if seeds:
            lines += ["### Seeds", "", "The tables above are seed 0; rows also trained at other seeds "
                      "(`--seed`), with the sample standard deviation of the worst-case robust accuracy.", ""]
            lines += seeds + [""]
        plots = amplification_plots(part, md_path, name)
        if plots:
            lines += ["### Error amplification", "",
                      "Per layer `||f_l(x + d) - f_l(x)|| / ||d||` (left) and spectral norms of the (quantized) "
                      "weights (right), from the checkpoint diagnostics (256 test points, `d` = eps * sign of the "
                      "model's own loss gradient).", ""] + plots
    return "\n".join(lines) + "\n"


def write_results(jsonl: Path, md_path: Path) -> None:
    """Rewrite the page from every rows file next to ``jsonl`` (all presets) and ``jsonl`` itself."""
    files = dict.fromkeys(sorted(jsonl.parent.glob("methods-*.jsonl")) + [jsonl])
    rows = [r for f in files for r in read_rows(f)]
    if rows:
        atomic_write_text(md_path, render(rows, md_path, read_cost()))


if __name__ == "__main__":
    sys.exit(main())
