"""The seed papers' claims, each tested in the regime where it can show: shared machinery.

    python bench/claims.py render        # rewrite docs/results.md from bench/results/claim-*.jsonl and certify.jsonl

One experiment per paper (``bench/claim_dq.py``, ``claim_lwq.py``, ``claim_binary_relax.py``,
``claim_odgq.py``) trains its *arms* (a training recipe each, at several seeds) and attacks every
arm on the same test points, so two arms are compared point by point (:mod:`paired`). This module
holds what they share:

* :class:`Recipe` and :func:`train_arm`: an arm's run config, trained once per seed through the
  training loop (resumable per epoch) and kept as a checkpoint whose name carries the config hash;
* :func:`evaluate`: an attack set run through verify's ensemble
  (:func:`robustq_deploy.attacks.run_ensemble`; ``standard`` is the verify plan of that budget:
  APGD-CE, APGD-T with 9 targets, Square with 5000 queries, each on the points still robust),
  in chunks of test points; each chunk's per-point outcome is one JSON line, so a killed run
  loses at most one chunk;
* :class:`Store`: the JSON-lines file of one experiment (train rows, eval rows, extra rows);
* :class:`Claim` and :func:`judge`: a claim about arm ``a`` against arm ``b`` on a metric, with its
  margin stated before the run; the paired bootstrap over points and seeds, the exact McNemar test
  on the first seed, and the verdict (``reproduced``, ``refuted``, ``inconclusive``, or
  ``untestable in this regime`` at a floor or ceiling);
* :func:`write_page`: ``docs/results.md``, one section per experiment, from all rows files.

Per-point outcome codes in eval rows: ``R`` robust, ``C`` misclassified clean, ``1``.. the attack
of the set (1-based, in run order) that first broke the point.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import paired  # noqa: E402
from robustq_deploy.config import RunConfig, from_dict, to_dict  # noqa: E402
from robustq_deploy.validation import validate  # noqa: E402
from robustq_deploy.manifest import atomic_write_text  # noqa: E402

RESULTS = REPO / "bench" / "results"
DEFAULT_WORK = Path(os.environ.get("ROBUSTQ_CLAIMS_WORK", "/work/runs-claims"))
EVAL_BATCH = 250  # points per run_ensemble call
CHUNK = 500  # points per eval row
EXPERIMENTS = ("claim_dq", "claim_lwq", "claim_binary_relax", "claim_odgq")
SMALL_DIFF = 0.05  # a verdict resting on a smaller accuracy difference needs MIN_SEEDS seeds per arm
MIN_SEEDS = 3


# --------------------------------------------------------------------------- arms and training


@dataclass(frozen=True)
class Recipe:
    """How one arm is trained (the seed is the arm's replicate index)."""

    dataset: str
    method: str
    weight_bits: Any = 32
    act_bits: Any = 32
    arch: str = "mnist-small"
    epochs: int = 10
    train_limit: int | None = None
    lr: float = 1e-3
    batch_size: int = 64
    eps: float = 0.0  # training eps (adversarial methods)
    eps_warmup_epochs: int = 0
    steps: int = 10  # PGD steps of pgd-at / trades / adv = "pgd"
    params: tuple[tuple[str, Any], ...] = ()  # method params, as sorted items (hashable)
    act_only: bool = False  # float weights with quantized activations (train_model(act_only=True))
    ptq: bool = False  # no training loop: the method's prepare alone (LWQ's post-training quantization)

    def with_params(self, **kw: Any) -> "Recipe":
        merged = dict(self.params)
        merged.update(kw)
        return Recipe(**{**self.__dict__, "params": tuple(sorted(merged.items()))})


def run_config(r: Recipe, seed: int, threads: int = 1, data_dir: str | None = None) -> RunConfig:
    return validate(from_dict(RunConfig, {
        "name": f"claims-{r.dataset}-{r.method}",
        "data": {"dataset": r.dataset, "data_dir": data_dir, "train_limit": r.train_limit},
        "model": {"arch": r.arch},
        "quant": {"weight_bits": r.weight_bits, "act_bits": r.act_bits},
        "train": {"method": r.method, "epochs": r.epochs, "batch_size": r.batch_size, "lr": r.lr,
                  "eps_warmup_epochs": r.eps_warmup_epochs, "threads": threads, "seed": seed,
                  "params": dict(r.params), "attack": {"eps": r.eps, "steps": r.steps}},
    }))


def config_hash(cfg: RunConfig) -> str:
    """Hash of what shapes the trained weights (not the thread count or the data folder)."""
    d = to_dict(cfg)
    d["train"].pop("threads", None)
    d["data"].pop("data_dir", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


class Store:
    """One experiment's JSON-lines rows. Appends are single ``write`` calls on an O_APPEND file, so
    two processes of the same experiment (different seeds) can share it."""

    def __init__(self, path: Path):
        self.path = path
        self._rows: list[dict[str, Any]] | None = None
        self.read_only = False

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = [json.loads(line) for line in self.path.read_text().splitlines()
                          if line.strip()] if self.path.exists() else []
        return self._rows

    def refresh(self) -> None:
        self._rows = None

    def add(self, row: dict[str, Any]) -> None:
        if self.read_only:
            raise ValueError(f"{self.path}: a recipe view is read-only; add rows to the experiment's store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(row, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if self._rows is not None:
            self._rows.append(row)

    def find(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows() if all(r.get(k) == v for k, v in match.items())]

    def of_recipe(self, **match: Any) -> "Store":
        """A read-only view: the trainings whose recipe has ``match`` (e.g. ``dataset="mnist"``)
        and every row of theirs (same config hash). One experiment run on two datasets has the
        same arm names and seeds in both; "the latest training of an arm and seed" must be
        asked within one dataset."""
        trains = [r for r in self.find(kind="train") if all(r["recipe"].get(k) == v for k, v in match.items())]
        hashes = {r["hash"] for r in trains}
        view = Store(self.path)
        view._rows = [r for r in self.rows() if r.get("hash") in hashes]
        view.read_only = True
        return view


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def checkpoint_path(work: Path, exp: str, arm: str, seed: int, h: str) -> Path:
    return work / exp / f"{arm}-seed{seed}-{h}.safetensors"


def weights_digest(model) -> str:
    """A digest of a model's weights and buffers (names, dtypes, shapes, bytes). The same config and
    seed trained on another CPU gives other weights (float rounding differs), so rows name the
    model they describe by this digest, not by the config hash alone."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def train_arm(store: Store, exp: str, arm: str, recipe: Recipe, seed: int, work: Path, threads: int = 1,
              data_dir: str | None = None, progress: bool = False, extra_keys: Iterable[str] = (),
              parent: dict | None = None) -> tuple[Any, dict]:
    """The trained model of one arm and seed, and its train row (trained now unless a checkpoint of
    the same config hash and its row exist). A run killed mid-training resumes after its last epoch.

    The row carries the model's :func:`weights_digest` (``weights``); an arm derived from another
    (a teacher, a base: ``parent``, that arm's train row) also carries the parent's arm and digest.
    A row of another model (the checkpoint was lost and the config retrained elsewhere, or the
    parent changed) does not count: the arm is trained again and gets a new row, which leaves the
    old model's eval rows behind (see :func:`current`)."""
    from robustq_deploy.train import read_checkpoint, save_checkpoint, train_model
    from robustq_deploy.train.resume import state_path_for

    cfg = run_config(recipe, seed, threads, data_dir)
    h = config_hash(cfg)
    ckpt = checkpoint_path(work, exp, arm, seed, h)
    done = store.find(kind="train", arm=arm, seed=seed, hash=h)
    lineage = {"parent_arm": parent["arm"], "parent_weights": parent.get("weights")} if parent else {}
    if done and ckpt.exists():
        model, _ = read_checkpoint(ckpt)
        w = weights_digest(model)
        last = done[-1]
        if last.get("weights") == w and all(last.get(k) == v for k, v in lineage.items()):
            return model.eval(), last
        if "weights" not in last and not parent:
            # a row written before rows carried digests, beside the checkpoint that run saved
            row = {**last, "weights": w, "digest_added": True}
            store.add(row)
            return model.eval(), row
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if recipe.ptq:
        model, metrics, rcfg = prepare_only(cfg)
    else:
        model, metrics, rcfg = train_model(cfg, progress=progress, state_path=state_path_for(ckpt),
                                           act_only=recipe.act_only)
    save_checkpoint(model, rcfg, ckpt, metrics)
    state_path_for(ckpt).unlink(missing_ok=True)
    row = {"kind": "train", "exp": exp, "arm": arm, "seed": seed, "hash": h, "checkpoint": str(ckpt),
           "weights": weights_digest(model), **lineage, "clean_acc": metrics["test_acc"],
           "train_seconds": round(metrics["train_seconds"], 1),
           "train_cpu_seconds": round(metrics["train_cpu_seconds"], 1), "row_seconds": round(time.perf_counter() - t0, 1),
           "recipe": {k: (dict(v) if k == "params" else v) for k, v in recipe.__dict__.items()},
           "command": command_line()}
    for key in ("channel_sparsity", "channel_sparsity_per_layer", "zero_weight_fraction",
                "channel_sparsity_before_pruning", "zero_weight_fraction_before_pruning", "pruned_channels",
                "lwq", "orthogonality", *extra_keys):
        if key in metrics:
            row[key] = metrics[key]
    store.add(row)
    return model.eval(), row


def prepare_only(cfg: RunConfig) -> tuple[Any, dict[str, Any], RunConfig]:
    """The model the method prepares, without the training loop (``Recipe.ptq``): for LWQ, the
    quantized student with the teacher's weights and observed activation scales."""
    from robustq_deploy.models import build_model_for
    from robustq_deploy.train import accuracy, make_method
    from robustq_deploy.train.base import PrepareContext
    from robustq_deploy.checkpoint import load_split

    torch.manual_seed(cfg.train.seed)
    x, y, ds = load_split(cfg, "train")
    tx, ty, _ = load_split(cfg, "test")
    method = make_method(cfg.train)
    t0, c0 = time.perf_counter(), time.process_time()
    model = build_model_for(cfg.model, cfg.quant, len(ds.classes), ds.input_shape)
    model = method.prepare(model, PrepareContext(cfg, x, y, torch.device("cpu"), False)).eval()
    metrics = dict(method.finish(model))
    metrics.update(train_seconds=time.perf_counter() - t0, train_cpu_seconds=time.process_time() - c0,
                   test_acc=accuracy(model, tx, ty))
    return model, metrics, method.run_config(cfg)


# --------------------------------------------------------------------------- attacks


def threat(eps: float):
    from robustq_deploy.attacks import ThreatModel

    return ThreatModel("linf", eps)


def attack_set(name: str, eps: float) -> list:
    """The attacks of a named set at radius ``eps``: ``clean`` (none: clean predictions); ``fgsm``;
    ``pgd20`` (PGD-20, one start);
    ``transfer`` (PGD-20 crafted on the source model ``float`` and replayed); ``standard`` /
    ``fast`` (verify's plan of that budget)."""
    from robustq_deploy.attacks import make_attack
    from robustq_deploy.config import VerifyConfig
    from robustq_deploy.verify.plan import build_plan

    t = threat(eps)
    if name == "clean":
        return []
    if name == "fgsm":
        return [make_attack("fgsm", t)]
    if name == "pgd20":
        return [make_attack("pgd", t, {"steps": 20})]
    if name == "transfer":
        return [make_attack("transfer", t, {"source": "float", "steps": 20})]
    if name in ("standard", "fast", "thorough"):
        return build_plan(VerifyConfig(budget=name, eps=eps)).attacks
    raise ValueError(f"unknown attack set {name!r}")


SET_NAMES = {"fgsm": "FGSM", "pgd20": "PGD-20", "transfer": "transfer (PGD-20 on the float model)",
             "standard": "standard ensemble (APGD-CE, APGD-T x9, Square-5000)"}
CODE = {-1: "R", 0: "C"}


def encode(code: torch.Tensor) -> str:
    return "".join(CODE.get(int(c), str(int(c))) for c in code)


def evaluate(store: Store, exp: str, arm: str, seed: int, h: str, model, x: torch.Tensor, y: torch.Tensor,
             eps: float, set_name: str, points: int, sources: dict | None = None, source_tag: str = "",
             on_chunk: Callable | None = None) -> None:
    """Attack the first ``points`` test points with one set, chunk by chunk (skipping chunks already
    in the store). ``on_chunk(start, result)`` sees each fresh chunk's ensemble result."""
    from robustq_deploy.attacks import run_ensemble
    from robustq_deploy.verify.state import seeded_generator

    attacks = attack_set(set_name, eps)
    model = model.cpu().eval()
    w = weights_digest(model)
    extra = {"source_weights": {k: weights_digest(m) for k, m in sorted(sources.items())}} if sources else {}
    for start in range(0, points, CHUNK):
        n = min(CHUNK, points - start)
        key = dict(kind="eval", arm=arm, seed=seed, hash=h, eps=eps, set=set_name, start=start, n=n)
        if source_tag:
            key["source"] = source_tag
        if any(r.get("weights") == w or ("weights" not in r and _legacy_match(store, r, w)) for r in store.find(**key)):
            continue
        t0 = time.perf_counter()
        codes, results = [], []
        for i in range(start, start + n, EVAL_BATCH):
            j = min(i + EVAL_BATCH, start + n)
            res = run_ensemble(attacks, {"white-box": model, **(sources or {})}, {"twin": model}, x[i:j], y[i:j],
                               threat(eps), lambda k, i=i: seeded_generator(seed, set_name, f"p{i}", k))
            codes.append(res.code["twin"])
            results.append((i, res))
        store.add({**key, "exp": exp, "weights": w, **extra, "code": encode(torch.cat(codes)),
                   "seconds": round(time.perf_counter() - t0, 1),
                   "attacks": [a.describe()["name"] for a in attacks]})
        if on_chunk is not None:
            for i, res in results:
                on_chunk(i, res)


def _legacy_match(store: Store, row: dict, w: str) -> bool:
    """An eval row written before rows carried digests counts for the model of digest ``w`` only
    while the latest train row of its arm is of that generation too: digest-less, or the digest
    added to such a row when its checkpoint was found beside it (``digest_added``), not a model
    trained again."""
    trains = store.find(kind="train", arm=row["arm"], seed=row["seed"], hash=row["hash"])
    if not trains:
        return False
    last = trains[-1]
    return "weights" not in last or (last["weights"] == w and bool(last.get("digest_added")))


def current(store: Store, row: dict) -> bool:
    """Whether an eval row describes the model of its arm and seed's latest train row: same config
    hash, same weights digest (rows from before digests: same generation, see :func:`_legacy_match`),
    and, for a derived arm, a parent whose latest train row is still the model it was derived from."""
    trains = store.find(kind="train", arm=row["arm"], seed=row["seed"])
    if not trains or trains[-1]["hash"] != row["hash"]:
        return False
    t = trains[-1]
    if "parent_arm" in t:
        parents = store.find(kind="train", arm=t["parent_arm"], seed=row["seed"])
        if not parents or parents[-1].get("weights") != t.get("parent_weights"):
            return False
    elif "weights" not in t:
        # derived before rows named parents: its recipe names the parent's checkpoint; a parent trained
        # again since (a row with a digest of its own, not one added beside the old checkpoint) leaves it stale
        params = (t.get("recipe") or {}).get("params") or {}
        src = params.get("teacher") or params.get("init")
        parents = [p for p in store.find(kind="train", seed=row["seed"]) if src and p.get("checkpoint") == src]
        if parents and "weights" in parents[-1] and not parents[-1].get("digest_added"):
            return False
    w = t.get("weights")
    if "weights" in row:
        return row["weights"] == w
    return w is None or _legacy_match(store, row, w)


def codes(store: Store, arm: str, seed: int, eps: float, set_name: str, points: int, source: str = "") -> str | None:
    """The per-point codes of the first ``points`` points (None until every chunk is there), from
    the eval rows of the arm and seed's current model (:func:`current`)."""
    trains = store.find(kind="train", arm=arm, seed=seed)
    if not trains or points <= 0:
        return None
    h = trains[-1]["hash"]
    out = []
    for start in range(0, points, CHUNK):
        key = dict(kind="eval", arm=arm, seed=seed, hash=h, eps=eps, set=set_name, start=start,
                   n=min(CHUNK, points - start))
        rows = [r for r in store.find(**key) if r.get("source", "") == source and current(store, r)]
        if not rows:
            return None
        out.append(rows[-1]["code"])
    return "".join(out)


def robust_mask(code: str) -> np.ndarray:
    return np.frombuffer(code.encode(), dtype=np.uint8) == ord("R")


def clean_mask(code: str) -> np.ndarray:
    return np.frombuffer(code.encode(), dtype=np.uint8) != ord("C")


def outcome(store: Store, arm: str, seed: int, metric: str, points: int) -> np.ndarray | None:
    """Per-point outcome of one arm and seed: ``clean@EPS/SET`` (clean correctness, from any eval
    of those points), ``robust@EPS/SET+SET...`` (robust against every listed set: the per-point
    worst case). None while some part is missing."""
    what, spec = metric.split("@", 1)
    eps_text, sets = spec.split("/", 1)
    eps = float(eps_text)
    masks = []
    for s in sets.split("+"):
        s, _, source = s.partition(":")
        c = codes(store, arm, seed, eps, s, points, source)
        if c is None:
            return None
        masks.append(clean_mask(c) if what == "clean" else robust_mask(c))
    return np.logical_and.reduce(masks)


# --------------------------------------------------------------------------- claims and verdicts


@dataclass(frozen=True)
class Claim:
    """``a`` against ``b`` on ``metric`` (see :func:`outcome`, or an experiment's own metric):
    ``kind`` superior / non-inferior / inferior with ``margin`` (a fraction), fixed before the run."""

    paper: str
    text: str
    a: str
    b: str
    metric: str
    kind: str
    margin: float
    points: int
    regime: str = ""
    accuracy: bool = True  # an accuracy or a difference of accuracies (written in points); False: any value
    label: str = ""  # how the metric is written on the page (default: ``metric``)
    floor: bool = True  # the floor / ceiling rule applies (accuracies; not differences of them)


@dataclass
class Judged:
    claim: Claim
    verdict: str
    p: paired.Paired | None = None
    mcnemar: dict | None = None
    seeds_a: list[int] = field(default_factory=list)
    seeds_b: list[int] = field(default_factory=list)
    per_seed_a: list[float] = field(default_factory=list)
    per_seed_b: list[float] = field(default_factory=list)


def judge(claim: Claim, seeds: Iterable[int], get: Callable[[str, int], np.ndarray | None]) -> Judged:
    """The verdict of ``claim`` from the per-point outcomes ``get(arm, seed)`` of every seed both arms
    have (an arm's missing seeds are left out; no seed at all: "not run"). An accuracy verdict that
    rests on a difference below ``SMALL_DIFF`` with fewer than ``MIN_SEEDS`` seeds in an arm stays
    inconclusive: seed-to-seed variation is then as large as the difference; so does a verdict on a
    per-model quantity (one value per seed) with fewer seeds. McNemar's test runs on the first
    common seed when the outcomes are right / wrong per point."""
    seeds = list(seeds)
    rows_a = [(s, get(claim.a, s)) for s in seeds]
    rows_b = [(s, get(claim.b, s)) for s in seeds]
    rows_a = [(s, v) for s, v in rows_a if v is not None]
    rows_b = [(s, v) for s, v in rows_b if v is not None]
    if not rows_a or not rows_b:
        return Judged(claim, "not run")
    a = np.stack([v for _, v in rows_a]).astype(float)
    b = np.stack([v for _, v in rows_b]).astype(float)
    p = paired.paired_bootstrap(a, b)
    kw = {} if claim.accuracy and claim.floor else {"floor": -math.inf, "ceiling": math.inf}
    v = paired.verdict(p, claim.kind, claim.margin, **kw)
    few = min(len(rows_a), len(rows_b)) < MIN_SEEDS
    if v in ("reproduced", "refuted") and few and claim.accuracy and abs(p.diff) < SMALL_DIFF:
        v = (f"inconclusive (a difference below {SMALL_DIFF:.0%} needs {MIN_SEEDS} seeds per arm; "
             f"{len(rows_a)} and {len(rows_b)} so far)")
    elif v in ("reproduced", "refuted") and few and p.points == 1:
        v = f"inconclusive (one value per model: needs {MIN_SEEDS} seeds per arm; {len(rows_a)} and {len(rows_b)} so far)"
    mc = None
    binary = all(np.isin(v_, (0, 1)).all() for _, v_ in rows_a + rows_b)
    if claim.accuracy and claim.floor and binary and p.points > 1:
        common = [s for s, _ in rows_a if s in {t for t, _ in rows_b}]
        if common:
            mc = paired.mcnemar(dict(rows_a)[common[0]].astype(bool), dict(rows_b)[common[0]].astype(bool))
            mc["seed"] = common[0]
    return Judged(claim, v, p, mc, [s for s, _ in rows_a], [s for s, _ in rows_b],
                  [float(v.mean()) for _, v in rows_a], [float(v.mean()) for _, v in rows_b])


def pyplot():
    """matplotlib's pyplot on the non-interactive backend (rendering runs headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png: Path, alt: str) -> list[str]:
    """Write ``fig`` to ``png`` atomically (no timestamp in the file: same rows, same bytes), close
    it, and return the Markdown lines that show it."""
    from robustq_deploy.manifest import atomic_path

    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    pyplot().close(fig)
    return [f"![{alt}]({png.name})", ""]


def pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def _num(v: float, accuracy: bool) -> str:
    return pct(v) if accuracy else f"{v:.3f}"


def claim_table(judged: list[Judged]) -> list[str]:
    """One row per claim: arms, numbers per seed, the paired difference and its interval, McNemar on
    the first common seed, the margin and the verdict."""
    out = ["| paper | claim | regime | a vs b | metric | a (per seed) | b (per seed) | a - b [95% CI] | "
           "McNemar (seed) | margin | verdict | seeds | points |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for j in judged:
        c = j.claim
        unit = "" if c.accuracy else " (value)"
        metric = c.label or c.metric
        kind = {"superior": "a > b by more than", "non-inferior": "a >= b minus", "inferior": "a < b by more than"}[c.kind]
        margin = f"{kind} {pct(c.margin) if c.accuracy else f'{c.margin:g}'}{' pts' if c.accuracy else ''}"
        if j.p is None:
            out.append(f"| {c.paper} | {c.text} | {c.regime} | {c.a} vs {c.b} | {metric}{unit} | - | - | - | - | "
                       f"{margin} | **{j.verdict}** | - | {c.points} |")
            continue
        f = (lambda v: _num(v, c.accuracy))
        a_txt = f"{f(j.p.acc_a)} ({', '.join(f(v) for v in j.per_seed_a)})"
        b_txt = f"{f(j.p.acc_b)} ({', '.join(f(v) for v in j.per_seed_b)})"
        diff = (f"{100 * j.p.diff:+.1f} [{100 * j.p.low:+.1f}, {100 * j.p.high:+.1f}]" if c.accuracy
                else f"{j.p.diff:+.3f} [{j.p.low:+.3f}, {j.p.high:+.3f}]")
        mc = (f"{j.mcnemar['only_a']}/{j.mcnemar['only_b']}, p={j.mcnemar['p_value']:.2g} (s{j.mcnemar['seed']})"
              if j.mcnemar else "-")
        seeds = f"{','.join(map(str, j.seeds_a))} / {','.join(map(str, j.seeds_b))}"
        out.append(f"| {c.paper} | {c.text} | {c.regime} | {c.a} vs {c.b} | {metric}{unit} | {a_txt} | {b_txt} | "
                   f"{diff} | {mc} | {margin} | **{j.verdict}** | {seeds} | {j.p.points} |")
    return out


def current_hashes(store: Store) -> set[str]:
    """The config hash of every arm and seed's latest training (older rows are of changed recipes)."""
    latest = {(r["arm"], r["seed"]): r["hash"] for r in store.find(kind="train")}
    return set(latest.values())


def commands(store: Store) -> list[str]:
    """The commands that trained the current arms."""
    now = current_hashes(store)
    return list(dict.fromkeys(r["command"] for r in store.find(kind="train") if r.get("command") and r["hash"] in now))


def command_lines(store: Store) -> list[str]:
    """The "Commands:" block of a section: the command lines that produced the store's rows."""
    return ["Commands:", ""] + [f"    {c}" for c in commands(store)] + [""]


def section_head(store: Store, title: str, script: str) -> list[str]:
    """A claim section's heading, then "not run yet" (no rows) or :func:`command_lines`."""
    lines = [f"## {title}", ""]
    if not store.rows():
        return lines + [f"Not run yet: `python bench/{script}`.", ""]
    return lines + command_lines(store)


def add_run_args(ap, jsonl: Path) -> None:
    """The options every claim experiment takes: threads, work folder, rows file, quiet."""
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--jsonl", type=Path, default=jsonl)
    ap.add_argument("--quiet", action="store_true")


def max_points(store: Store, **match: Any) -> int:
    """How many leading test points the current arms' eval rows matching ``match`` cover (at most)."""
    return max((r["start"] + r["n"] for r in store.find(kind="eval", **match) if current(store, r)), default=0)


# --------------------------------------------------------------------------- the page


HEADER = """# The seed papers' claims, tested where they can show

Generated by `python bench/claims.py render` from `bench/results/claim-*.jsonl` (do not edit by
hand); each experiment script rewrites it when it finishes. One section per paper: the regime
where its claim can show, the arms, and one row per claim. Last, the certified robustness of the
deployed integer model (rows of `bench/certify.py`).

**How a claim is judged.** Every arm of an experiment is attacked on the same test points (the
first N of the test split), so two arms are compared point by point. `a - b [95% CI]` is the
difference of the arms' mean accuracies with a paired bootstrap interval (2000 draws resampling
the test points, the same points for both arms, and each arm's training seeds independently: the
interval carries the point-sampling and the seed-to-seed noise). The claim's margin was fixed
before the run: *superior* is reproduced when the whole interval lies above `+margin` and refuted
when it lies at or below it; *non-inferior* is reproduced when the interval lies above `-margin`
and refuted when it lies below; *inferior* is reproduced when it lies below `-margin` and refuted
when it lies at or above it ("at": an interval of zero width on the margin, two arms equal on every
point and seed, shows no effect at all). Anything else is *inconclusive*.
When both arms sit at or below 2% (a floor) or at or above 98% (a ceiling) no method can show a
difference: *untestable in this regime*.
`McNemar` gives the discordant points (a right and b wrong / the reverse) of the first common seed
and the exact two-sided p-value. `(value)` rows compare a per-point quantity, not an accuracy.

**Attacks.** Robust accuracy is the per-point worst case over the sets named in the metric,
`robust@EPS/SETS`: `standard` is verify's standard ensemble (APGD-CE, APGD-T with 9 target
classes, then Square with 5000 queries, each on the points still robust: AutoAttack's standard
version without FAB-T), run through `robustq_deploy.attacks.run_ensemble` on the fake-quant twin
exactly as `robustq verify --budget standard` runs it; `fgsm` and `pgd20` (PGD-20, one random
start) are the papers' weaker attacks, kept where a paper's claim is about them; `transfer` is
PGD-20 crafted on a float source model and replayed. Adversarial inputs are rounded to the uint8
pixel grid before they are scored, so a radius is effectively `floor(255 * eps) / 255`; radii are
written as multiples of 1/255 where it matters.

Statistics: `bench/paired.py` (tested on hand-computed cases in `tests/bench/test_paired.py`).
The methods grid of `bench/methods.py` (every method at every width, measured before these
experiments) is in [`methods.md`](methods.md).
"""


def load_experiment(name: str):
    import importlib

    return importlib.import_module(name)


def certified_section() -> list[str]:
    """The certified-robustness section, rendered by ``bench/certify.py`` from its rows file."""
    mod = load_experiment("certify")
    return mod.certified_section(mod.read_rows(mod.JSONL))


def write_page(md_path: Path = REPO / "docs" / "results.md") -> str:
    lines = [HEADER]
    for name in EXPERIMENTS:
        if (REPO / "bench" / f"{name}.py").exists():
            lines += load_experiment(name).section(md_path) + [""]
    lines += certified_section() + [""]
    text = "\n".join(lines).rstrip() + "\n"
    atomic_write_text(md_path, text)
    return text


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["render"])
    ap.add_argument("--results-md", type=Path, default=REPO / "docs" / "results.md")
    args = ap.parse_args(argv)
    write_page(args.results_md)
    print(args.results_md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
