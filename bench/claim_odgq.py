"""Claim experiment: ODG-Q is about as robust as PGD adversarial training, clearly more robust than
fast (FGSM-RS) training, at a cost close to natural training, and at low bit widths too.

    python bench/claim_odgq.py --widths 8 [--seeds 0,1,2] [--points 1000]
    python bench/claim_odgq.py --widths 4,ternary [--seeds 0,1,2] [--points 500]
    python bench/claim_odgq.py --widths binary [--seeds 0,1,2] [--points 500]

Regime: MNIST at L-inf eps 0.3, ``mnist-small``, the ``small-warm`` recipe of ``bench/methods.py``
(10 epochs on all 60k training images, Adam lr 5e-3, the training eps ramped over 5 epochs, batch
64, PGD-10 inside ``pgd-at``). Arms per width: ``qat`` (natural training of the quantized model:
the floor and the cost reference; one seed), ``fgsm-rs``, ``odgq``, ``pgd-at`` (three seeds each).
Widths: ``8`` (int8 weights and activations: the re-run of the comparison under the standard
ensemble), ``4`` (4-bit weights and activations), ``ternary`` (ternary weights, 8-bit activations)
and ``binary`` (binary weights, 8-bit activations). Attacks: verify's standard ensemble on the twin
(white-box worst case with Square) and a transfer attack, PGD-20 crafted on a float ``pgd-at``
model (seed 0, same recipe) and replayed on each quantized model: the black-box check that the
white-box numbers are not gradient masking. Points: the first ``--points`` test points (1000 at
int8, where the ODG-Q vs PGD-AT difference is small; 500 at the low widths, where the ensemble's
cost per robust point is what limits the run). Training cost: ``bench/train_cost.py`` side by side
at each width.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claims as C  # noqa: E402

EXP = "odgq"
JSONL = C.RESULTS / "claim-odgq.jsonl"
EPS = 0.3
METHODS = ("qat", "fgsm-rs", "odgq", "pgd-at")
ONE_SEED = ("qat",)  # at the floor: one seed says it
MARGIN = 0.02
CLEAN_MARGIN = 0.01
COST_LIMIT = 2.0  # "close to natural training": at most 2x natural per step, side by side
WIDTHS = {"8": (8, 8), "4": (4, 4), "ternary": ("ternary", 8), "binary": ("binary", 8), "float": (32, 32)}


def recipe(method: str, width: str) -> C.Recipe:
    wb, ab = WIDTHS[width]
    return C.Recipe("mnist", method, wb, ab, epochs=10, lr=5e-3, eps=EPS, eps_warmup_epochs=5, steps=10)


def arm(method: str, width: str) -> str:
    return f"{method}@{width}"


SURROGATE = arm("pgd-at", "float")
LABEL = "robust: standard ensemble + transfer"


def worst(points: int) -> str:
    return f"robust@{EPS}/standard+transfer:{SURROGATE}"


def claims(width: str, points: int) -> list[C.Claim]:
    regime = f"MNIST eps 0.3, {width}{'-bit' if width.isdigit() else ''}"
    m = worst(points)
    o, p, f, q = (arm(x, width) for x in ("odgq", "pgd-at", "fgsm-rs", "qat"))
    return [
        C.Claim("ODG-Q", "ODG-Q is about as robust as PGD-AT", o, p, m, "non-inferior", MARGIN, points, regime,
                label=LABEL),
        C.Claim("ODG-Q", "ODG-Q is more robust than fast (FGSM-RS) training", o, f, m, "superior", MARGIN, points, regime,
                label=LABEL),
        C.Claim("ODG-Q", "ODG-Q is robust where plain QAT is not", o, q, m, "superior", MARGIN, points, regime,
                label=LABEL),
        C.Claim("ODG-Q", "ODG-Q keeps PGD-AT's clean accuracy", o, p, f"clean@{EPS}/standard", "non-inferior",
                CLEAN_MARGIN, points, regime, label="clean"),
    ]


def run(args) -> None:
    from robustq_deploy.checkpoint import load_split

    store = C.Store(args.jsonl)
    x, y, _ = load_split(C.run_config(recipe("qat", "8"), 0), "test")
    surrogate, _ = C.train_arm(store, EXP, SURROGATE, recipe("pgd-at", "float"), 0, args.work, args.threads,
                               progress=not args.quiet)
    for seed in args.seeds:
        for width in args.widths:
            for method in args.methods:
                if method in ONE_SEED and seed != args.seeds[0]:
                    continue
                name = arm(method, width)
                model, row = C.train_arm(store, EXP, name, recipe(method, width), seed, args.work, args.threads,
                                         progress=not args.quiet)
                print(f"[odgq] trained {name} seed {seed}: clean {row['clean_acc']:.4f}, {row['train_seconds']:.0f} s",
                      flush=True)
                C.evaluate(store, EXP, name, seed, row["hash"], model, x, y, EPS, "transfer", args.points,
                           sources={"float": surrogate}, source_tag=SURROGATE)
                C.evaluate(store, EXP, name, seed, row["hash"], model, x, y, EPS, "standard", args.points)
                print(f"[odgq] evaluated {name} seed {seed}", flush=True)
    C.write_page()


def arm_table(store: C.Store, width: str, points: int) -> list[str]:
    out = ["| arm | seeds | clean % (10k test) per seed | standard ensemble % | transfer % | worst case % per seed | "
           "worst case mean | train s per seed |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method in METHODS:
        name = arm(method, width)
        trains = sorted({r["seed"]: r for r in store.find(kind="train", arm=name)}.values(), key=lambda r: r["seed"])
        if not trains:
            continue

        def per(metric):
            return [C.outcome(store, name, t["seed"], metric, points) for t in trains]

        std = [v.mean() for v in per(f"robust@{EPS}/standard") if v is not None]
        tr = [v.mean() for v in per(f"robust@{EPS}/transfer:{SURROGATE}") if v is not None]
        w = [v.mean() for v in per(worst(points)) if v is not None]
        out.append(f"| {name} | {','.join(str(t['seed']) for t in trains)} | "
                   f"{', '.join(C.pct(t['clean_acc']) for t in trains)} | {C.pct(np.mean(std)) if std else '-'} | "
                   f"{C.pct(np.mean(tr)) if tr else '-'} | {', '.join(C.pct(v) for v in w) or '-'} | "
                   f"{C.pct(np.mean(w)) if w else '-'} | {', '.join(format(t['train_seconds'], '.0f') for t in trains)} |")
    return out


def cost_rows(width: str) -> list[dict]:
    """``bench/train_cost.py`` rows measured at this width's weight and activation bits."""
    wb, ab = WIDTHS[width]
    return [r for r in C.read_jsonl(C.RESULTS / "train-cost.jsonl")
            if r["arch"] == "mnist-small" and r["bits"] == wb and r.get("act_bits", 8) == ab]


def cost_claim(width: str) -> list[str]:
    rows = {r["method"]: r for r in cost_rows(width)}
    if "odgq" not in rows:
        return [f"| ODG-Q | training cost close to natural (at most {COST_LIMIT:g}x natural per step) | {width} | "
                f"odgq vs qat | - | **not run** (`python bench/train_cost.py --bits {width} --act-bits {WIDTHS[width][1]}`) |"]
    r = rows["odgq"]
    word = "reproduced" if r["ratio_p90"] <= COST_LIMIT else "refuted" if r["ratio_p10"] > COST_LIMIT else "inconclusive"
    others = ", ".join(f"{m} {rows[m]['ratio']:.2f}x" for m in ("fgsm-rs", "pgd-at") if m in rows)
    return [f"| ODG-Q | training cost close to natural (at most {COST_LIMIT:g}x natural per step) | {width} | "
            f"odgq vs qat | {r['ratio']:.2f}x (p10-p90 {r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}); {others} | **{word}** |"]


def plots(store: C.Store, md_path: Path, widths: list[str]) -> list[str]:
    """Left: each arm's worst-case robust accuracy per width (bars: the mean; dots: the seeds).
    Right: training cost per step relative to ``qat`` (bars: the median of rounds; whiskers: the
    10th-90th percentiles), per width."""
    plt = C.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = {"qat": "tab:gray", "fgsm-rs": "tab:orange", "odgq": "tab:green", "pgd-at": "tab:blue"}
    width_bar = 0.8 / len(METHODS)
    labelled: set[str] = set()
    for k, method in enumerate(METHODS):
        for i, width in enumerate(widths):
            points = max((C.max_points(store, set="standard", arm=arm(m, width)) for m in METHODS), default=0)
            seeds = sorted({t["seed"] for t in store.find(kind="train", arm=arm(method, width))})
            vals = [100 * v.mean() for v in (C.outcome(store, arm(method, width), s, worst(points), points)
                                             for s in seeds) if v is not None]
            if not vals:
                continue
            x = i + (k - (len(METHODS) - 1) / 2) * width_bar
            left.bar(x, np.mean(vals), width_bar, color=colors[method], label=None if method in labelled else method)
            left.scatter([x] * len(vals), vals, color="black", s=10, zorder=3)
            labelled.add(method)
    left.set_xticks(range(len(widths)), [f"{w}{'-bit' if w.isdigit() else ''}" for w in widths])
    left.set_ylim(0, 112)  # headroom for the legend above the bars
    left.set_ylabel("worst case % (standard ensemble + transfer)")
    left.set_title("MNIST eps 0.3: robust accuracy per arm (bars: mean; dots: seeds)", fontsize=9)
    if labelled:
        left.legend(fontsize=7, loc="upper center", ncol=4)
    cost_widths = [w for w in WIDTHS if w != "float" and cost_rows(w)]
    costed: set[str] = set()
    for k, method in enumerate(METHODS):
        for i, width in enumerate(cost_widths):
            r = next((r for r in cost_rows(width) if r["method"] == method), None)
            if r is None:
                continue
            x = i + (k - (len(METHODS) - 1) / 2) * width_bar
            err = [[r["ratio"] - r["ratio_p10"]], [r["ratio_p90"] - r["ratio"]]]
            right.bar(x, r["ratio"], width_bar, color=colors[method], yerr=err, capsize=2,
                      label=None if method in costed else method)
            costed.add(method)
    right.axhline(COST_LIMIT, color="black", linestyle=":", linewidth=1, label=f"{COST_LIMIT:g}x (the claim's limit)")
    right.set_yscale("log")
    right.set_xticks(range(len(cost_widths)), [f"{w}{'-bit' if w.isdigit() else ''}" for w in cost_widths])
    right.set_ylabel("time per training step / qat's")
    right.set_title("training cost per step, side by side (bench/train_cost.py)", fontsize=9)
    right.legend(fontsize=7, loc="upper left")
    return C.save_figure(fig, md_path.parent / "results-odgq.png", "ODG-Q: robust accuracy per arm and training cost")


PILOTS = """\
Earlier pilots that chose ODG-Q's defaults (one seed each, `mnist-small`, int8, 10 epochs, the first
1000 test points, scored with the earlier protocol PGD-40 x2 then Square-1000, which the standard
ensemble has since superseded; `bench/methods.py` presets `small-tuned`, `small-long`, `small-warm`,
rows in `docs/methods.md`): the step sizes, noise and replay step 0.75-1.5 / 1.0 / 0.5 against the
earlier 0.5-1.25 / 0.5 / 0.25 gave 87.1% vs 86.4% worst case at lr 5e-3 and 86.4% vs 86.1% at lr 1e-3
(within sampling error: a mild preference). Neighbours of the defaults at lr 5e-3 did worse:
`variance_weight` 0 86.5% and 3 83.2%, `eps_min` 0.7 85.1%, `eps_max` 1.2 82.2%, 15 epochs 85.4%
(PGD 90.4%). With a 3-epoch eps warm-up the defaults reached 87.1%, 87.7% and 80.4% at seeds 0-2
(seed 2's loss jumped when the ramp reached full eps and never recovered); the 5-epoch warm-up used
here gave 87.1%, 86.4%, 86.5%. The 7x larger `mnist-cnn` (seed 0, 5-epoch warm-up) reached 86.5%
(89.2% PGD) at lr 5e-3 and 85.1% at lr 2e-3. Under that protocol Square broke about 4 points that
PGD-40 left, for ODG-Q (91.1% PGD, 87.1% worst case) as for PGD-10 training (90.6%, 86.7%).
"""


def source_note(store: C.Store, width: str) -> str:
    """Which transfer source model the width's current rows faced (its weights digest), so that a
    source retrained on another host between widths shows."""
    seen = set()
    for r in store.find(kind="eval", set="transfer"):
        if r["arm"].split("@")[-1] == width and C.current(store, r):
            seen.add(",".join(sorted(r.get("source_weights", {}).values())) or "not recorded")
    if not seen:
        return ""
    named = ", ".join(f"`{d}`" if d != "not recorded" else "not recorded (rows from before weight digests)"
                      for d in sorted(seen))
    return f"Transfer source at this width: weights {named}."


def section(md_path: Path) -> list[str]:
    store = C.Store(JSONL)
    lines = C.section_head(store, "ODG-Q: robust quantization as online domain generalization", "claim_odgq.py")
    if not store.rows():
        return lines
    lines += ["Regime: MNIST, L-inf eps 0.3, `mnist-small`, 10 epochs on all 60k training images, Adam lr 5e-3, "
              "training eps ramped over 5 epochs, batch 64, PGD-10 inside `pgd-at`. Worst case: verify's standard "
              "ensemble on the twin and a transfer attack (PGD-20 on the float `pgd-at` model, seed 0), per point.", ""]
    seeds = sorted({r["seed"] for r in store.find(kind="train")})
    cost = []
    for width in WIDTHS:
        if width == "float":
            continue
        if cost_rows(width) or store.find(kind="train", arm=arm("odgq", width)):
            cost += cost_claim(width)  # measured on its own, before or after the width's arms are trained
        if not store.find(kind="train", arm=arm("odgq", width)):
            continue
        points = max((C.max_points(store, set="standard", arm=arm(m, width)) for m in METHODS), default=0)
        lines += [f"### {width}{'-bit' if width.isdigit() else ''} weights"
                  f"{' and activations' if width in ('8', '4') else ' (8-bit activations)'}, first {points} test points",
                  ""] + arm_table(store, width, points) + [""]
        note = source_note(store, width)
        lines += [note, ""] if note else []

        def get(metric, n):
            return lambda a, s: C.outcome(store, a, s, metric, n)
        lines += C.claim_table([C.judge(c, seeds, get(c.metric, c.points)) for c in claims(width, points)]) + [""]
    lines += ["### Training cost, side by side", "",
              "Per-step cost of each method relative to natural training of the same quantized model (`qat`), "
              "measured by `bench/train_cost.py` with the methods interleaved round by round (median of the "
              "per-round ratios, 10th-90th percentile). The claim is judged against a limit fixed in advance: "
              f"reproduced when the 90th percentile is at most {COST_LIMIT:g}x, refuted when the 10th is above it.", "",
              "| paper | claim | width | arms | measured | verdict |", "| --- | --- | --- | --- | --- | --- |"] + cost + [""]
    trained = [w for w in WIDTHS if w != "float" and store.find(kind="train", arm=arm("odgq", w))]
    lines += plots(store, md_path, trained)
    lines += ["### Pilots", "", PILOTS]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=lambda s: s.split(","), default=["8"])
    ap.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--points", type=int, default=1000)
    C.add_run_args(ap, JSONL)
    args = ap.parse_args(argv)
    bad = [w for w in args.widths if w not in WIDTHS or w == "float"] + [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"unknown width or method: {', '.join(bad)}")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
