"""Claim experiment: plain quantization lowers robustness, and Defensive Quantization restores it.

    python bench/claim_dq.py [--dataset fashion-mnist|mnist] [--seeds 0,1,2] [--points 5000]
                             [--standard-points 500] [--threads 1] [--work DIR] [--stage train|eval|all]

The regime where the claim can show (Lin, Gan and Han 2019): naturally trained networks whose
*activations* are quantized to few bits, attacked at a *small* radius where the float model keeps
20-80% of its accuracy (at the bench's usual MNIST 0.3 / Fashion 0.1 every natural model is at 0%).
Arms, all natural training of ``mnist-small`` (5 epochs, all 60k training images, Adam 1e-3):
``float``; float weights with 4-bit and 2-bit activations (``act4``, ``act2``: only the activations
are quantized, which the paper's argument is about; the pixel input stays on its uint8 grid);
each of those with DQ's orthogonality regularizer at two strengths (``+dq(3e-4)``, the method's
default, and ``+dq(3e-3)``); and ``float+dq(...)``, the regularizer without quantization (does DQ
help through Lipschitz control alone?).

Attacks on the first ``--points`` test points (5000: a paired difference of 2 points is then
resolved when the arms disagree on about 5% of the points or fewer), at the experiment's radius:
FGSM, PGD-20 and a transfer attack (PGD-20 crafted on the same seed's float model), the paper's
attacks; verify's standard ensemble on the first ``--standard-points`` (its cost is what limits
them). Beside them, for the plots: PGD-20 at a sweep of radii on the first 1000 points, and
DQ's per-layer relative distance ``||q_l(x') - q_l(x)|| / ||q_l(x)||`` at every quantizer output
(the input of each layer, and the logits), ``x'`` the model's own PGD-20 example, on the first
1000 points.

Rows go to ``bench/results/claim-dq.jsonl``; finished chunks and trained arms are skipped, so a
killed run resumes. ``docs/results.md`` is rewritten at the end.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claims as C  # noqa: E402

EXP = "dq"
JSONL = C.RESULTS / "claim-dq.jsonl"
BETAS = (3e-4, 3e-3)
EPOCHS = 5  # natural training of mnist-small is near its final accuracy after 5 epochs
# main radius (where the float natural model keeps 20-80% under PGD-20) and the sweep, in 1/255
EPS = {"fashion-mnist": (6 / 255, (2 / 255, 4 / 255, 6 / 255, 8 / 255)),
       "mnist": (25 / 255, (13 / 255, 25 / 255, 38 / 255))}
RELDIST_POINTS = 1000
POINTS, STANDARD_POINTS = 5000, 500  # defaults of --points / --standard-points
SWEEP_POINTS = 1000
PAPER_SETS = "fgsm+pgd20+transfer"
MARGIN = 0.02  # 2 points, for every robust-accuracy claim
CLEAN_MARGIN = 0.01


def arms(dataset: str) -> dict[str, C.Recipe]:
    base = C.Recipe(dataset, "natural", epochs=EPOCHS)
    out = {"float": base}
    for bits in (4, 2):
        out[f"act{bits}"] = C.Recipe(dataset, "natural", 32, bits, epochs=EPOCHS, act_only=True)
    for beta in BETAS:
        for bits in (4, 2):
            out[f"act{bits}+dq({beta:g})"] = C.Recipe(dataset, "dq", 32, bits, epochs=EPOCHS, act_only=True,
                                                       params=(("beta", beta),))
        out[f"float+dq({beta:g})"] = C.Recipe(dataset, "dq", epochs=EPOCHS, params=(("beta", beta),))
    return out


def claims(dataset: str, points: int, standard_points: int) -> list[C.Claim]:
    eps = EPS[dataset][0]
    regime = f"{dataset}, natural training, eps {round(eps * 255)}/255"
    paper = f"robust@{eps}/{PAPER_SETS}"
    worst = f"robust@{eps}/standard+{PAPER_SETS}"
    out = []

    def both(text, a, b, kind, margin=MARGIN):
        out.append(C.Claim("DQ", text, a, b, paper, kind, margin, points, regime, label="robust: FGSM, PGD-20, transfer"))
        out.append(C.Claim("DQ", text, a, b, worst, kind, margin, standard_points, regime,
                           label="robust: standard ensemble + those"))

    for bits in (4, 2):
        both(f"plain {bits}-bit activation quantization lowers robustness vs float", f"act{bits}", "float", "inferior")
    for bits in (4, 2):
        for beta in BETAS:
            both(f"DQ raises robustness of the {bits}-bit model over plain quantization",
                 f"act{bits}+dq({beta:g})", f"act{bits}", "superior")
    for beta in BETAS:
        both("DQ's quantized model is more robust than the float model", f"act4+dq({beta:g})", "float", "superior")
        both("DQ helps the quantized model beyond Lipschitz control alone (float + the same regularizer)",
             f"act4+dq({beta:g})", f"float+dq({beta:g})", "superior")
    for bits in (4, 2):
        for beta in BETAS:
            out.append(C.Claim("DQ", "DQ keeps clean accuracy", f"act{bits}+dq({beta:g})", f"act{bits}",
                               f"clean@{eps}/fgsm", "non-inferior", CLEAN_MARGIN, points, regime, label="clean"))
    last = "reldist:fc2"
    for bits in (4, 2):
        out.append(C.Claim("DQ", "quantization amplifies the adversarial perturbation (relative distance at the last "
                           "quantizer)", f"act{bits}", "float", last, "superior", 0.0, RELDIST_POINTS, regime,
                           accuracy=False, label="rel. distance at fc2 input"))
        out.append(C.Claim("DQ", "DQ keeps the relative distance at the last quantizer below plain quantization's",
                           f"act{bits}+dq({BETAS[0]:g})", f"act{bits}", last, "inferior", 0.0, RELDIST_POINTS, regime,
                           accuracy=False, label="rel. distance at fc2 input"))
    return out


# --------------------------------------------------------------------------- relative distance


def quantizer_outputs(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of every layer's input quantizer (the quantized activation it computes with;
    for a float layer, its input) and the logits, flattened per point."""
    from robustq_deploy.quant import quant_layers

    seen, hooks = {}, []
    for name, layer in quant_layers(model):
        hooks.append(layer.in_q.register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach().flatten(1))))
    try:
        with torch.no_grad():
            seen["logits"] = model(x).flatten(1)
    finally:
        for h in hooks:
            h.remove()
    return seen


def relative_distance(model, x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, np.ndarray]:
    """Per layer and point ``||q_l(x') - q_l(x)|| / ||q_l(x)||``; NaN (undefined) where ``q_l(x)`` is
    all zero (a few-bit activation can quantize a whole layer input to zero)."""
    a, b = quantizer_outputs(model, x), quantizer_outputs(model, x_adv)
    out = {}
    for k in a:
        norm = a[k].norm(dim=1)
        out[k] = torch.where(norm > 0, (b[k] - a[k]).norm(dim=1) / norm.clamp(min=1e-30), torch.nan).numpy()
    return out


def reldist_values(store: C.Store, arm: str, seed: int, layer: str, eps: float) -> np.ndarray | None:
    trains = store.find(kind="train", arm=arm, seed=seed)
    if not trains:
        return None
    rows = store.find(kind="reldist", arm=arm, seed=seed, hash=trains[-1]["hash"], eps=eps)
    return np.asarray([np.nan if v is None else v for v in rows[-1]["layers"][layer]], float) if rows else None


def reldist_row(arm: str, seed: int, h: str, eps: float, d: dict[str, np.ndarray]) -> dict:
    """A reldist row: per layer and point, rounded; ``null`` where the distance is undefined."""
    return {"kind": "reldist", "exp": EXP, "arm": arm, "seed": seed, "hash": h, "eps": eps,
            "n": len(next(iter(d.values()))),
            "layers": {k: [None if not np.isfinite(v) else round(float(v), 5) for v in vals] for k, vals in d.items()}}


def reldist_defined(store: C.Store, dataset: str, seeds, layer: str, eps: float) -> np.ndarray:
    """The points whose relative distance at ``layer`` is defined for every arm and seed measured."""
    ok = np.ones(RELDIST_POINTS, bool)
    for arm in arms(dataset):
        for s in seeds:
            v = reldist_values(store, arm, s, layer, eps)
            if v is not None:
                ok[:len(v)] &= np.isfinite(v)
    return ok


# --------------------------------------------------------------------------- run


def run(args) -> None:
    from robustq_deploy.checkpoint import load_split
    from robustq_deploy.verify.state import seeded_generator

    store = C.Store(args.jsonl)
    table = arms(args.dataset)
    names = args.arms.split(",") if args.arms else list(table)
    eps, sweep = EPS[args.dataset]
    x, y, _ = load_split(C.run_config(table["float"], 0), "test")
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        models = {}
        for arm in ["float"] + [a for a in names if a != "float"]:
            model, row = C.train_arm(store, EXP, arm, table[arm], seed, args.work, args.threads, progress=not args.quiet)
            models[arm] = (model, row["hash"])
            print(f"[dq] trained {arm} seed {seed}: clean {row['clean_acc']:.4f}", flush=True)
        if args.stage == "train":
            continue
        float_model = models["float"][0]
        for arm in names:
            model, h = models[arm]
            for s in ("fgsm", "pgd20", "transfer"):
                C.evaluate(store, EXP, arm, seed, h, model, x, y, eps, s, args.points,
                           sources={"float": float_model} if s == "transfer" else None)
            for e in sweep:
                C.evaluate(store, EXP, arm, seed, h, model, x, y, e, "pgd20", SWEEP_POINTS)
            if not store.find(kind="reldist", arm=arm, seed=seed, hash=h, eps=eps):
                n = RELDIST_POINTS
                attack = C.attack_set("pgd20", eps)[0]
                x_adv = C.threat(eps).to_grid(attack.perturb(model, x[:n], y[:n], seeded_generator(seed, "reldist")),
                                              x[:n])
                store.add(reldist_row(arm, seed, h, eps, relative_distance(model, x[:n], x_adv)))
            print(f"[dq] paper attacks done: {arm} seed {seed}", flush=True)
    if args.stage != "train":
        for seed in args.seeds:  # the expensive ensemble last, seed by seed
            for arm in names:
                model, row = C.train_arm(store, EXP, arm, table[arm], seed, args.work, args.threads)
                C.evaluate(store, EXP, arm, seed, row["hash"], model, x, y, eps, "standard", args.standard_points)
                print(f"[dq] standard ensemble done: {arm} seed {seed}", flush=True)
    C.write_page()


# --------------------------------------------------------------------------- page


def _getter(store: C.Store, eps: float, defined: np.ndarray):
    def get(metric: str, points: int):
        def f(arm: str, seed: int):
            if metric.startswith("reldist:"):
                v = reldist_values(store, arm, seed, metric.split(":", 1)[1], eps)
                return None if v is None else v[:points][defined[:points]]
            return C.outcome(store, arm, seed, metric, points)
        return f
    return get


def plots(store: C.Store, dataset: str, md_path: Path, seeds) -> list[str]:
    plt = C.pyplot()
    eps, sweep = EPS[dataset]
    names = list(arms(dataset))
    lines = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for arm in names:
        ys = []
        for e in sweep:
            vals = [C.outcome(store, arm, s, f"robust@{e}/pgd20", SWEEP_POINTS) for s in seeds]
            vals = [v.mean() for v in vals if v is not None]
            ys.append(np.mean(vals) if vals else np.nan)
        if not np.all(np.isnan(ys)):
            ax.plot([round(e * 255) for e in sweep], [100 * v for v in ys], marker="o", label=arm,
                    linestyle="--" if "dq" in arm else "-")
            drawn = True
    if drawn:
        ax.set_xlabel("eps (x 1/255)")
        ax.set_ylabel("robust accuracy under PGD-20 (%)")
        ax.set_title(f"{dataset}: natural training, mean over seeds, first {SWEEP_POINTS} test points")
        ax.legend(fontsize=7)
        lines += C.save_figure(fig, md_path.parent / f"results-dq-{dataset}-eps.png", f"robust accuracy vs eps, {dataset}")
    else:
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for arm in names:
        per_seed = [store.find(kind="reldist", arm=arm, seed=s) for s in seeds]
        recs = [r[-1]["layers"] for r in per_seed if r]
        if not recs:
            continue
        layers = list(recs[0])
        ax.plot(layers, [np.mean([np.nanmean(np.asarray(r[k], float)) for r in recs]) for k in layers], marker="o",
                label=arm,
                linestyle="--" if "dq" in arm else "-")
        drawn = True
    if drawn:
        ax.set_yscale("log")
        ax.set_ylabel("||q_l(x') - q_l(x)|| / ||q_l(x)||")
        ax.set_xlabel("quantizer output (input of layer ...)")
        ax.set_title(f"{dataset}: relative distance under PGD-20 at eps {round(eps * 255)}/255")
        ax.legend(fontsize=7)
        lines += C.save_figure(fig, md_path.parent / f"results-dq-{dataset}-reldist.png",
                               f"relative distance per layer, {dataset}")
    else:
        plt.close(fig)
    return lines


def arm_table(store: C.Store, dataset: str, seeds, points: int, standard_points: int) -> list[str]:
    eps = EPS[dataset][0]
    out = ["| arm | clean % (10k test) | FGSM % | PGD-20 % | transfer % | paper attacks, worst % | "
           f"standard + paper, worst % (first {standard_points}) | rel. distance at fc2 input | seeds |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm in arms(dataset):
        trains = [store.find(kind="train", arm=arm, seed=s) for s in seeds]
        trains = [t[-1] for t in trains if t]
        if not trains:
            continue

        def mean(metric, n):
            vals = [C.outcome(store, arm, t["seed"], metric, n) for t in trains]
            vals = [v.mean() for v in vals if v is not None]
            return C.pct(float(np.mean(vals))) + (f" (n={len(vals)})" if len(vals) != len(trains) else "") if vals else "-"
        rd = [reldist_values(store, arm, t["seed"], "fc2", eps) for t in trains]
        rd = [float(np.nanmean(v)) for v in rd if v is not None]
        out.append(f"| {arm} | {C.pct(float(np.mean([t['clean_acc'] for t in trains])))} | "
                   f"{mean(f'robust@{eps}/fgsm', points)} | {mean(f'robust@{eps}/pgd20', points)} | "
                   f"{mean(f'robust@{eps}/transfer', points)} | {mean(f'robust@{eps}/{PAPER_SETS}', points)} | "
                   f"{mean(f'robust@{eps}/standard+{PAPER_SETS}', standard_points)} | "
                   f"{f'{np.mean(rd):.3f}' if rd else '-'} | {','.join(str(t['seed']) for t in trains)} |")
    return out


def section(md_path: Path) -> list[str]:
    store = C.Store(JSONL)
    title = "Defensive Quantization: quantization vs robustness (Lin, Gan and Han 2019)"
    if not store.rows():
        return C.section_head(store, title, "claim_dq.py")
    lines = [f"## {title}", ""]  # the commands go under each dataset's heading
    for dataset in EPS:
        store = C.Store(JSONL).of_recipe(dataset=dataset)  # arms and seeds repeat across datasets
        if not store.rows():
            continue
        seeds = sorted({r["seed"] for r in store.find(kind="train")})
        eps = EPS[dataset][0]
        points = C.max_points(store, set="fgsm", eps=eps)
        std = C.max_points(store, set="standard", eps=eps) or STANDARD_POINTS
        defined = reldist_defined(store, dataset, seeds, "fc2", eps)
        lines += [f"### {dataset}, eps {round(eps * 255)}/255 = {eps:.4f}", ""] + C.command_lines(store)
        lines += ["Arms: `mnist-small`, natural training (5 epochs, all 60k training images, Adam 1e-3, batch 64); "
                  "`actB`: float weights, B-bit activations (the pixel input stays on its uint8 grid); `+dq(beta)`: "
                  "DQ's orthogonality regularizer with that beta; `float+dq`: the regularizer without quantization. "
                  f"Means over seeds; attacks on the first {points} test points (standard ensemble: first {std}). "
                  "Relative distance: mean over the points where it is defined (an all-zero fc2 input leaves it "
                  f"undefined: {int((~defined).sum())} of the first {RELDIST_POINTS} points for some arm and seed, "
                  "left out of every arm's comparison).", ""]
        lines += arm_table(store, dataset, seeds, points, std) + [""]
        get = _getter(store, eps, defined)
        judged = [C.judge(c, seeds, get(c.metric, c.points)) for c in claims(dataset, points or POINTS, std)]
        lines += C.claim_table(judged) + [""]
        lines += plots(store, dataset, md_path, seeds)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(EPS), default="fashion-mnist")
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--arms", help="Comma-separated subset of the arms (float always comes along).")
    ap.add_argument("--points", type=int, default=POINTS)
    ap.add_argument("--standard-points", type=int, default=STANDARD_POINTS)
    ap.add_argument("--stage", choices=["train", "eval", "all"], default="all")
    C.add_run_args(ap, JSONL)
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
