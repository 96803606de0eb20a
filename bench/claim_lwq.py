"""Claim experiment: adversarially trained models lose more to quantization, and a layer-wise,
Lipschitz-guided allocation of bit widths keeps more of their robustness.

    python bench/claim_lwq.py [--seeds 0,1,2] [--points 500] [--part ptq|alloc|all]

Regime: Fashion-MNIST, where fast adversarial training at eps 0.1 is stable (at MNIST eps 0.3 it
collapses on ``mnist-small``), ``mnist-small``. Teachers per seed, float: ``natural`` (10 epochs)
and ``fgsm-rs`` (fast adversarial training at eps 0.1, 10 epochs on all 60k images, Adam 1e-3,
eps ramped over 3 epochs; PGD-10 teachers cost 10x more per step than two shared cores allow for
three seeds).

Part ``ptq`` (the paper's first claim, in the regime where quantization loss shows: low widths,
no fine-tuning): each teacher quantized post-training (weights 8, 4, 2 bits and ternary, uniform,
activations 8-bit, scales observed on 512 training images, no fine-tuning). The loss of each
teacher (float minus quantized, per test point) is compared between the teachers: on clean
accuracy (all 10k test points), and on robust accuracy at eps 4/255, a radius where the natural
teacher is not at the floor; the adversarial teacher's loss at its own eps 0.1 is shown beside it.

Part ``alloc`` (the second claim): the ``fgsm-rs`` teacher quantized by LWQ at 2, 3 and 4 bits per
weight on average: the bound-guided allocation (``allocation = "bound"``), the same search on the
quantization error alone (``"error"``), both held to at least 90% of the budget
(``min_fill = 0.9``), and uniform widths where one exists (2 and 4 bits); each without
fine-tuning and after 1 epoch of FGSM-RS fine-tuning (Adam 1e-4; ten epochs, as the methods
bench did, wash the allocation out).

Robust accuracy: verify's standard ensemble on the first ``--points`` test points (500: the
ensemble's cost per robust point limits the count; the allocation differences of interest are
several points). Rows: ``bench/results/claim-lwq.jsonl``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claims as C  # noqa: E402

EXP = "lwq"
JSONL = C.RESULTS / "claim-lwq.jsonl"
DATASET = "fashion-mnist"
EPS = 0.1
COMMON_EPS = 4 / 255
PTQ_WIDTHS = ("8", "4", "2", "ternary")
BUDGETS = (2, 3, 4)
UNIFORM = {2: 2, 4: 4}  # budgets with a uniform width of that size
MIN_FILL = 0.9
MARGIN = 0.02
CLEAN_MARGIN = 0.01


def teacher_recipe(method: str) -> C.Recipe:
    return C.Recipe(DATASET, method, epochs=10, lr=1e-3, eps=EPS if method != "natural" else 0.0,
                    eps_warmup_epochs=3 if method != "natural" else 0, steps=10)


def teacher(store: C.Store, method: str, seed: int, args):
    """The float teacher (trained when missing) and its checkpoint path."""
    model, row = C.train_arm(store, EXP, f"{method}@float", teacher_recipe(method), seed, args.work, args.threads,
                             progress=not args.quiet)
    return model, row


def lwq_recipe(teacher_ckpt: str, bits, allocation: str, budget, epochs: int) -> C.Recipe:
    params = {"teacher": teacher_ckpt, "allocation": allocation, "calib": 512}
    if allocation != "uniform":
        params.update(budget_bits=float(budget), min_fill=MIN_FILL)
    wb = int(bits) if str(bits).isdigit() else bits
    return C.Recipe(DATASET, "lwq", wb, 8, epochs=max(epochs, 1), lr=1e-4, eps=EPS, steps=10,
                    params=tuple(sorted(params.items())), ptq=epochs == 0)


def ptq_arm(teacher_method: str, width: str) -> str:
    return f"{teacher_method}@{width}-ptq"


def alloc_arm(allocation: str, budget: int, epochs: int) -> str:
    return f"{allocation}@{budget}b-ft{epochs}"


def run(args) -> None:
    from robustq_deploy.checkpoint import load_split

    store = C.Store(args.jsonl)
    x, y, _ = load_split(C.run_config(teacher_recipe("natural"), 0), "test")
    n = args.points
    for seed in args.seeds:
        teachers = {m: teacher(store, m, seed, args) for m in ("natural", "fgsm-rs")}
        for m, (model, row) in teachers.items():
            C.evaluate(store, EXP, row["arm"], seed, row["hash"], model, x, y, 0.0, "clean", len(x))
            C.evaluate(store, EXP, row["arm"], seed, row["hash"], model, x, y, COMMON_EPS, "standard", n)
        t_model, t_row = teachers["fgsm-rs"]
        C.evaluate(store, EXP, t_row["arm"], seed, t_row["hash"], t_model, x, y, EPS, "standard", n)
        if args.part in ("ptq", "all"):
            for width in PTQ_WIDTHS:
                for m, (_, trow) in teachers.items():
                    name = ptq_arm(m, width)
                    model, row = C.train_arm(store, EXP, name, lwq_recipe(trow["checkpoint"], width, "uniform", None, 0),
                                             seed, args.work, args.threads, parent=trow)
                    print(f"[lwq] {name} seed {seed}: clean {row['clean_acc']:.4f}", flush=True)
                    C.evaluate(store, EXP, name, seed, row["hash"], model, x, y, 0.0, "clean", len(x))
                    C.evaluate(store, EXP, name, seed, row["hash"], model, x, y, COMMON_EPS, "standard", n)
                    if m == "fgsm-rs":
                        C.evaluate(store, EXP, name, seed, row["hash"], model, x, y, EPS, "standard", n)
        if args.part in ("alloc", "all"):
            for epochs in (0, 1):
                for budget in BUDGETS:
                    for allocation in ("bound", "error", "uniform"):
                        if allocation == "uniform" and budget not in UNIFORM:
                            continue
                        bits = UNIFORM.get(budget, 4) if allocation == "uniform" else 8
                        name = alloc_arm(allocation, budget, epochs)
                        model, row = C.train_arm(store, EXP, name,
                                                 lwq_recipe(t_row["checkpoint"], bits, allocation, budget, epochs),
                                                 seed, args.work, args.threads, progress=not args.quiet, parent=t_row)
                        print(f"[lwq] {name} seed {seed}: clean {row['clean_acc']:.4f}, "
                              f"{row['lwq']['bits_per_weight']:.2f} bits/weight", flush=True)
                        C.evaluate(store, EXP, name, seed, row["hash"], model, x, y, EPS, "standard", n)
    C.write_page()


# --------------------------------------------------------------------------- page


def _drop(store: C.Store, method: str, width: str, what: str, eps: float, points: int):
    """Per-point loss of the teacher to PTQ at ``width``: float outcome minus quantized outcome."""
    metric = "clean@0.0/clean" if what == "clean" else f"robust@{eps}/standard"

    def get(arm_unused, seed):
        f = C.outcome(store, f"{method}@float", seed, metric, points)
        q = C.outcome(store, ptq_arm(method, width), seed, metric, points)
        return None if f is None or q is None else f.astype(float) - q.astype(float)
    return get


def ptq_claims(store: C.Store, points: int) -> list[tuple]:
    out = []
    for width in PTQ_WIDTHS:
        regime = f"{DATASET}, post-training {width}{'-bit' if width.isdigit() else ''} weights, no fine-tuning"
        for what, eps, margin, label, n in (("clean", COMMON_EPS, CLEAN_MARGIN, "loss of clean accuracy", 10000),
                                            ("robust", COMMON_EPS, MARGIN, "loss of robust accuracy at eps 4/255",
                                             points)):
            c = C.Claim("LWQ", "an adversarially trained model loses more to quantization than a natural one",
                        "fgsm-rs teacher", "natural teacher", f"{what}-drop", "superior", margin, n, regime,
                        label=label, floor=False)
            drops = {"fgsm-rs teacher": _drop(store, "fgsm-rs", width, what, eps, n),
                     "natural teacher": _drop(store, "natural", width, what, eps, n)}
            out.append((c, lambda arm, seed, d=drops: d[arm](arm, seed)))
    return out


def alloc_claims(points: int) -> list[C.Claim]:
    out = []
    metric = f"robust@{EPS}/standard"
    for epochs in (0, 1):
        for budget in BUDGETS:
            regime = f"{DATASET} eps 0.1, fgsm-rs teacher, {budget} bits/weight, {epochs} fine-tuning epoch{'s' * (epochs != 1)}"
            if budget in UNIFORM:
                out.append(C.Claim("LWQ", "the Lipschitz-guided allocation keeps more robustness than uniform widths",
                                   alloc_arm("bound", budget, epochs), alloc_arm("uniform", budget, epochs), metric,
                                   "superior", MARGIN, points, regime, label="robust: standard ensemble"))
            out.append(C.Claim("LWQ", "the Lipschitz terms matter: bound-guided beats the error-only allocation",
                               alloc_arm("bound", budget, epochs), alloc_arm("error", budget, epochs), metric,
                               "superior", MARGIN, points, regime, label="robust: standard ensemble"))
    return out


def arm_table(store: C.Store, points: int) -> list[str]:
    out = ["| arm | seeds | bits/weight | layers (bits@clip) | clean % (10k test) | robust % eps 4/255 | robust % eps 0.1 |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    names = ["natural@float", "fgsm-rs@float"] + [ptq_arm(m, w) for w in PTQ_WIDTHS for m in ("natural", "fgsm-rs")] + \
        [alloc_arm(a, b, e) for e in (0, 1) for b in BUDGETS for a in ("bound", "error", "uniform")]
    for name in names:
        trains = sorted({r["seed"]: r for r in store.find(kind="train", arm=name)}.values(), key=lambda r: r["seed"])
        if not trains:
            continue

        def mean(eps):
            vals = [C.outcome(store, name, t["seed"], f"robust@{eps}/standard", points) for t in trains]
            vals = [v.mean() for v in vals if v is not None]
            return C.pct(float(np.mean(vals))) + (f" (n={len(vals)})" if len(vals) != len(trains) else "") if vals else "-"
        lw = trains[0].get("lwq")
        layers = ", ".join(f"{r['layer']}:{r['bits']}" + (f"@{r['clip']}" if r["clip"] else "") for r in lw["layers"]) if lw else "float"
        bpw = f"{np.mean([t['lwq']['bits_per_weight'] for t in trains]):.2f}" if lw else "32"
        out.append(f"| {name} | {','.join(str(t['seed']) for t in trains)} | {bpw} | {layers} (seed {trains[0]['seed']}) | "
                   f"{C.pct(float(np.mean([t['clean_acc'] for t in trains])))} | {mean(COMMON_EPS)} | {mean(EPS)} |")
    return out


def _mean_over_seeds(store: C.Store, name: str, metric: str, points: int) -> float:
    """An arm's accuracy under ``metric``, averaged over the seeds that have it (nan when none)."""
    if metric == "clean":
        vals = list({t["seed"]: t["clean_acc"] for t in store.find(kind="train", arm=name)}.values())
    else:
        seeds = sorted({t["seed"] for t in store.find(kind="train", arm=name)})
        vals = [v.mean() for v in (C.outcome(store, name, s, metric, points) for s in seeds) if v is not None]
    return 100 * float(np.mean(vals)) if vals else float("nan")


def plots(store: C.Store, md_path: Path, points: int) -> list[str]:
    """Left: what post-training quantization costs each teacher, per width. Right: robust accuracy
    per bit budget for each allocation, without and after fine-tuning."""
    plt = C.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    widths = ["float"] + list(PTQ_WIDTHS)
    for method, color in (("natural", "tab:blue"), ("fgsm-rs", "tab:red")):
        names = [f"{method}@float"] + [ptq_arm(method, w) for w in PTQ_WIDTHS]
        for metric, style, what in (("clean", ":", "clean"), (f"robust@{COMMON_EPS}/standard", "-", "eps 4/255")):
            left.plot(widths, [_mean_over_seeds(store, n, metric, points) for n in names], linestyle=style,
                      marker="o", color=color, label=f"{method} teacher, {what}")
    left.set_xlabel("weights (post-training, no fine-tuning; activations 8-bit)")
    left.set_ylabel("accuracy (%)")
    left.set_title(f"teachers after post-training quantization\n(robust: standard ensemble, first {points} points)",
                   fontsize=9)
    left.legend(fontsize=7)
    colors = {"bound": "tab:green", "error": "tab:orange", "uniform": "tab:gray"}
    for allocation, color in colors.items():
        for epochs, style in ((0, "--"), (1, "-")):
            budgets = [b for b in BUDGETS if allocation != "uniform" or b in UNIFORM]
            ys = [_mean_over_seeds(store, alloc_arm(allocation, b, epochs), f"robust@{EPS}/standard", points)
                  for b in budgets]
            if not np.all(np.isnan(ys)):
                right.plot(budgets, ys, linestyle=style, marker="o", color=color,
                           label=f"{allocation}, {epochs} fine-tuning epoch{'s' * (epochs != 1)}")
    right.set_xticks(list(BUDGETS))
    right.set_xlabel("bits per weight (budget)")
    right.set_ylabel(f"robust accuracy at eps {EPS} (%)")
    right.set_title("allocations on the fgsm-rs teacher\n(standard ensemble; mean over seeds)", fontsize=9)
    right.legend(fontsize=7)
    return C.save_figure(fig, md_path.parent / "results-lwq.png",
                         "post-training loss per teacher; robust accuracy per allocation and budget")


def section(md_path: Path) -> list[str]:
    store = C.Store(JSONL)
    lines = C.section_head(store, "LWQ: layer-wise adversarial-aware quantization", "claim_lwq.py")
    if not store.rows():
        return lines
    points = C.max_points(store, set="standard")
    seeds = sorted({r["seed"] for r in store.find(kind="train")})
    lines += [f"Regime: {DATASET}, `mnist-small`; float teachers `natural` and `fgsm-rs` (fast adversarial training at "
              "eps 0.1), both 10 epochs on all 60k images, Adam 1e-3 (the eps ramped over 3 epochs). `W-ptq`: the teacher quantized post-training "
              "(uniform W-bit weights, 8-bit activations, scales observed on 512 training images, no fine-tuning). "
              f"`ALLOC@Bb-ftE`: LWQ on the `fgsm-rs` teacher at B bits per weight (bound / error: at least "
              f"{MIN_FILL:.0%} of the budget), fine-tuned E epochs (FGSM-RS, Adam 1e-4). Robust accuracy: "
              f"verify's standard ensemble on the first {points} test points. Drop rows compare per-point losses "
              "(float outcome minus quantized outcome) of the two teachers.", ""]
    lines += arm_table(store, points) + [""]
    judged = []
    for c, get in ptq_claims(store, points):
        judged.append(C.judge(c, seeds, get))
    for c in alloc_claims(points):
        judged.append(C.judge(c, seeds, lambda a, s, c=c: C.outcome(store, a, s, c.metric, c.points)))
    lines += C.claim_table(judged) + [""]
    lines += plots(store, md_path, points)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--part", choices=["ptq", "alloc", "all"], default="all")
    C.add_run_args(ap, JSONL)
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
