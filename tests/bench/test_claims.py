"""bench/claims.py: per-point outcomes (codes, the per-point worst case over attack sets), resuming
evaluations chunk by chunk, and claims judged on hand-made outcomes."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def C():
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("claims", REPO / "bench" / "claims.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _store(C, tmp_path, codes_by_arm, eps=0.1, sets=("pgd20",)):
    """A store with one train row per (arm, seed) and one eval chunk per set, from code strings."""
    store = C.Store(tmp_path / "rows.jsonl")
    for (arm, seed), per_set in codes_by_arm.items():
        store.add({"kind": "train", "arm": arm, "seed": seed, "hash": f"h{arm}{seed}"})
        for s in sets:
            code = per_set[s] if isinstance(per_set, dict) else per_set
            store.add({"kind": "eval", "arm": arm, "seed": seed, "hash": f"h{arm}{seed}", "eps": eps, "set": s,
                       "start": 0, "n": len(code), "code": code})
    return store


def test_codes_and_the_worst_case_over_sets(C, tmp_path):
    assert C.encode(torch.tensor([-1, 0, 1, 3, -1])) == "RC13R"
    store = _store(C, tmp_path, {("a", 0): {"fgsm": "RRRCR1", "pgd20": "RR1CRR"}}, sets=("fgsm", "pgd20"))
    np.testing.assert_array_equal(C.outcome(store, "a", 0, "robust@0.1/fgsm", 6), [1, 1, 1, 0, 1, 0])
    np.testing.assert_array_equal(C.outcome(store, "a", 0, "robust@0.1/fgsm+pgd20", 6), [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(C.outcome(store, "a", 0, "clean@0.1/pgd20", 6), [1, 1, 1, 0, 1, 1])
    assert C.outcome(store, "a", 0, "robust@0.1/standard", 6) is None  # not evaluated
    assert C.outcome(store, "a", 1, "robust@0.1/fgsm", 6) is None  # no such seed


def test_a_retrained_arm_uses_only_its_new_rows(C, tmp_path):
    store = _store(C, tmp_path, {("a", 0): "RRRR"})
    store.add({"kind": "train", "arm": "a", "seed": 0, "hash": "new"})  # the recipe changed: a new hash
    assert C.outcome(store, "a", 0, "robust@0.1/pgd20", 4) is None
    store.add({"kind": "eval", "arm": "a", "seed": 0, "hash": "new", "eps": 0.1, "set": "pgd20", "start": 0, "n": 4,
               "code": "C1RR"})
    np.testing.assert_array_equal(C.outcome(store, "a", 0, "robust@0.1/pgd20", 4), [0, 0, 1, 1])


def test_one_experiment_on_two_datasets_is_read_per_dataset(C, tmp_path):
    """The same arm and seed trained on two datasets: the whole store sees only the later training
    (the other dataset's rows are lost to it); a per-dataset view sees each dataset's own rows."""
    store = C.Store(tmp_path / "rows.jsonl")
    for ds, h, code in (("fashion-mnist", "hf", "RRC1"), ("mnist", "hm", "RRRR")):
        store.add({"kind": "train", "arm": "a", "seed": 0, "hash": h, "recipe": {"dataset": ds}})
        store.add({"kind": "eval", "arm": "a", "seed": 0, "hash": h, "eps": 0.1, "set": "pgd20", "start": 0, "n": 4,
                   "code": code})
    np.testing.assert_array_equal(C.outcome(store, "a", 0, "robust@0.1/pgd20", 4), [1, 1, 1, 1])
    fashion = store.of_recipe(dataset="fashion-mnist")
    np.testing.assert_array_equal(C.outcome(fashion, "a", 0, "robust@0.1/pgd20", 4), [1, 1, 0, 0])
    assert C.current_hashes(fashion) == {"hf"} and C.current_hashes(store.of_recipe(dataset="mnist")) == {"hm"}
    with pytest.raises(ValueError, match="read-only"):
        fashion.add({"kind": "train"})


def test_judge_on_hand_made_outcomes(C, tmp_path):
    # b is robust on the first 50 of 100 points; a on those and 20 more: +20 points on every seed
    b = "R" * 50 + "1" * 50
    a = "R" * 70 + "1" * 30
    store = _store(C, tmp_path, {("a", s): a for s in range(3)} | {("b", s): b for s in range(3)})

    def get(arm, seed):
        return C.outcome(store, arm, seed, "robust@0.1/pgd20", 100)

    claim = C.Claim("P", "a beats b", "a", "b", "robust@0.1/pgd20", "superior", 0.02, 100)
    j = C.judge(claim, [0, 1, 2], get)
    assert j.verdict == "reproduced" and j.p.diff == pytest.approx(0.2)
    assert (j.mcnemar["only_a"], j.mcnemar["only_b"], j.mcnemar["seed"]) == (20, 0, 0)
    assert j.mcnemar["p_value"] == pytest.approx(2 / 2 ** 20)
    assert j.seeds_a == [0, 1, 2] and j.per_seed_a == [0.7, 0.7, 0.7]
    worse = C.judge(C.Claim("P", "b beats a", "b", "a", "robust@0.1/pgd20", "superior", 0.02, 100), [0, 1, 2], get)
    assert worse.verdict == "refuted"
    lost = C.judge(C.Claim("P", "b lower", "b", "a", "robust@0.1/pgd20", "inferior", 0.02, 100), [0, 1, 2], get)
    assert lost.verdict == "reproduced"
    missing = C.judge(C.Claim("P", "x", "a", "c", "robust@0.1/pgd20", "superior", 0.02, 100), [0, 1, 2], get)
    assert missing.verdict == "not run" and missing.p is None
    table = "\n".join(C.claim_table([j, missing]))
    assert "| a vs b |" in table and "+20.0 [+" in table and "20/0, p=1.9e-06 (s0)" in table
    assert "**reproduced**" in table and "**not run**" in table and "0,1,2 / 0,1,2" in table


def test_judge_uses_the_seeds_each_arm_has(C, tmp_path):
    store = _store(C, tmp_path, {("a", 0): "RRRR", ("a", 1): "RR11", ("b", 0): "RR11"})
    j = C.judge(C.Claim("P", "x", "a", "b", "robust@0.1/pgd20", "superior", 0.0, 4), [0, 1, 2],
                lambda arm, s: C.outcome(store, arm, s, "robust@0.1/pgd20", 4))
    assert (j.seeds_a, j.seeds_b) == ([0, 1], [0])
    assert j.p.acc_a == pytest.approx(0.75) and j.p.acc_b == pytest.approx(0.5)


def test_a_small_difference_needs_three_seeds_per_arm(C):
    # a is right on 1030 of 2000 points, b on 1000 of them: +1.5 points, every point agreeing otherwise
    a = np.r_[np.ones(1030, bool), np.zeros(970, bool)]
    b = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    claim = C.Claim("P", "x", "a", "b", "m", "superior", 0.0, 2000)
    one = C.judge(claim, [0], lambda arm, s: a if arm == "a" else b)
    assert one.verdict.startswith("inconclusive (a difference below 5% needs 3 seeds per arm; 1 and 1 so far)")
    three = C.judge(claim, [0, 1, 2], lambda arm, s: a if arm == "a" else b)
    assert three.verdict == "reproduced"
    big = np.r_[np.ones(1200, bool), np.zeros(800, bool)]  # +10 points: one seed each may decide
    assert C.judge(claim, [0], lambda arm, s: big if arm == "a" else b).verdict == "reproduced"


def test_floor_is_untestable_but_values_have_no_floor(C):
    floor = C.Claim("P", "x", "a", "b", "robust@0.3/standard", "superior", 0.02, 4)
    j = C.judge(floor, [0], lambda arm, s: np.zeros(200, bool) if arm == "b" else np.r_[np.ones(2), np.zeros(198)])
    assert j.verdict.startswith("untestable in this regime")
    value = C.Claim("P", "x", "a", "b", "dist", "superior", 0.0, 4, accuracy=False)
    j = C.judge(value, [0], lambda arm, s: np.full(50, 0.01 if arm == "a" else 0.005))
    assert j.verdict == "reproduced"
    assert "+0.005 [+0.005, +0.005]" in "\n".join(C.claim_table([j]))


def test_evaluate_resumes_chunk_by_chunk(C, tmp_path, monkeypatch):
    """Chunks already in the store are not attacked again; the rest are, and the codes line up."""
    from robustq_deploy.config import QuantConfig
    from robustq_deploy.models import build_model

    torch.manual_seed(0)
    model = build_model("digits-cnn", QuantConfig(32, 32), 10, (1, 8, 8)).eval()
    x = torch.randint(0, 256, (12, 1, 8, 8)).float() / 255
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct clean
    monkeypatch.setattr(C, "CHUNK", 5)
    store = C.Store(tmp_path / "rows.jsonl")
    store.add({"kind": "train", "arm": "m", "seed": 0, "hash": "h", "weights": C.weights_digest(model)})
    C.evaluate(store, "t", "m", 0, "h", model, x[:5], y[:5], 0.5, "fgsm", 5)
    first = store.find(kind="eval")
    assert len(first) == 1 and first[0]["n"] == 5
    import robustq_deploy.attacks as attacks

    calls = []
    real = attacks.run_ensemble
    monkeypatch.setattr(attacks, "run_ensemble", lambda *a, **k: calls.append(len(a[4])) or real(*a, **k))
    C.evaluate(store, "t", "m", 0, "h", model, x, y, 0.5, "fgsm", 12)
    assert calls == [5, 2]  # the chunks at 5 and 10; the one at 0 was done
    rows = store.find(kind="eval")
    assert [(r["start"], r["n"]) for r in rows] == [(0, 5), (5, 5), (10, 2)]
    code = C.codes(C.Store(tmp_path / "rows.jsonl"), "m", 0, 0.5, "fgsm", 12)
    assert len(code) == 12 and set(code) <= {"R", "1"}
    C.evaluate(store, "t", "m", 0, "h", model, x, y, 0.5, "fgsm", 12)
    assert len(store.find(kind="eval")) == 3  # nothing new


def test_weights_digest_names_the_weights(C):
    from robustq_deploy.config import QuantConfig
    from robustq_deploy.models import build_model

    torch.manual_seed(0)
    a = build_model("digits-cnn", QuantConfig(32, 32), 10, (1, 8, 8))
    torch.manual_seed(0)
    b = build_model("digits-cnn", QuantConfig(32, 32), 10, (1, 8, 8))
    assert C.weights_digest(a) == C.weights_digest(b) and len(C.weights_digest(a)) == 16
    with torch.no_grad():
        first = next(iter(b.parameters()))
        first.view(-1)[0] = torch.nextafter(first.view(-1)[0], torch.tensor(1e9))  # one ulp
    assert C.weights_digest(a) != C.weights_digest(b)


def test_rows_follow_the_model_not_only_the_config(C, tmp_path):
    """The same config retrained elsewhere is another model: its old eval rows stop counting. Rows
    from before digests count while the arm's latest train row is of their generation (no digest,
    or the digest added beside the checkpoint found on disk); a derived arm counts only while its
    parent's latest model is the one it was derived from."""
    store = C.Store(tmp_path / "rows.jsonl")
    legacy = {"kind": "train", "arm": "a", "seed": 0, "hash": "h"}
    store.add(legacy)
    ev = {"kind": "eval", "arm": "a", "seed": 0, "hash": "h", "eps": 0.1, "set": "pgd20", "start": 0, "n": 4}
    store.add({**ev, "code": "RRRR"})
    get = lambda arm="a": C.outcome(store, arm, 0, "robust@0.1/pgd20", 4)  # noqa: E731
    np.testing.assert_array_equal(get(), [1, 1, 1, 1])
    store.add({**legacy, "weights": "w1", "digest_added": True})  # checkpoint found beside the row
    np.testing.assert_array_equal(get(), [1, 1, 1, 1])
    assert C.max_points(store, set="pgd20") == 4
    store.add({**legacy, "weights": "w2"})  # checkpoint lost, same config trained again: other weights
    assert get() is None and C.max_points(store, set="pgd20") == 0
    store.add({**ev, "weights": "w1", "code": "CCCC"})  # an eval of the old model does not count either
    assert get() is None
    store.add({**ev, "weights": "w2", "code": "R1CR"})
    np.testing.assert_array_equal(get(), [1, 0, 0, 1])

    store.add({"kind": "train", "arm": "d", "seed": 0, "hash": "hd", "weights": "wd", "parent_arm": "a",
               "parent_weights": "w2"})
    store.add({**ev, "arm": "d", "hash": "hd", "weights": "wd", "code": "RRCC"})
    np.testing.assert_array_equal(get("d"), [1, 1, 0, 0])
    store.add({**legacy, "weights": "w3"})  # the parent changed: the derived model is stale
    assert get("d") is None

    # rows from before digests: a derived arm names its parent by the parent's checkpoint path
    teacher = {"kind": "train", "arm": "t", "seed": 0, "hash": "ht", "checkpoint": "/w/t.safetensors"}
    store.add(teacher)
    store.add({"kind": "train", "arm": "q", "seed": 0, "hash": "hq",
               "recipe": {"params": {"teacher": "/w/t.safetensors"}}})
    store.add({**ev, "arm": "q", "hash": "hq", "code": "RCRC"})
    np.testing.assert_array_equal(get("q"), [1, 0, 1, 0])
    store.add({**teacher, "weights": "wt", "digest_added": True})  # the same teacher, digest added
    np.testing.assert_array_equal(get("q"), [1, 0, 1, 0])
    store.add({**teacher, "weights": "wt2"})  # the teacher trained again: the old student is stale
    assert get("q") is None


def test_evaluate_attacks_again_when_the_model_changed(C, tmp_path, monkeypatch):
    """Same arm, seed and config hash, other weights (retrained on another CPU): evaluate does not
    take the old model's chunks as done, and the codes are the new model's."""
    from robustq_deploy.config import QuantConfig
    from robustq_deploy.models import build_model

    torch.manual_seed(0)
    model = build_model("digits-cnn", QuantConfig(32, 32), 10, (1, 8, 8)).eval()
    x = torch.randint(0, 256, (6, 1, 8, 8)).float() / 255
    with torch.no_grad():
        y = model(x).argmax(1)
    store = C.Store(tmp_path / "rows.jsonl")
    store.add({"kind": "train", "arm": "m", "seed": 0, "hash": "h", "weights": C.weights_digest(model)})
    C.evaluate(store, "t", "m", 0, "h", model, x, y, 0.5, "fgsm", 6)
    C.evaluate(store, "t", "m", 0, "h", model, x, y, 0.5, "fgsm", 6)
    assert len(store.find(kind="eval")) == 1
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # a constant model: every point but one class is wrong
    store.add({"kind": "train", "arm": "m", "seed": 0, "hash": "h", "weights": C.weights_digest(model)})
    assert C.codes(store, "m", 0, 0.5, "fgsm", 6) is None
    C.evaluate(store, "t", "m", 0, "h", model, x, y, 0.5, "fgsm", 6)
    rows = store.find(kind="eval")
    assert len(rows) == 2 and rows[1]["weights"] == C.weights_digest(model) != rows[0]["weights"]
    with torch.no_grad():
        const = model(x).argmax(1)
    expect = "".join("R" if bool(c == t) else "C" for c, t in zip(const, y))  # nothing to flip a constant
    assert C.codes(store, "m", 0, 0.5, "fgsm", 6) == expect


def test_train_arm_keeps_rows_and_checkpoints_of_one_model(C, tmp_path):
    """A trained arm is read back, not trained again; a row from before digests, found beside its
    checkpoint, gets the digest added; a derived arm is trained again when its parent changed."""
    recipe = C.Recipe("digits", "natural", arch="digits-cnn", epochs=1, train_limit=128)
    store = C.Store(tmp_path / "rows.jsonl")
    model, row = C.train_arm(store, "t", "a", recipe, 0, tmp_path / "work")
    assert row["weights"] == C.weights_digest(model) and Path(row["checkpoint"]).exists()
    again, row2 = C.train_arm(store, "t", "a", recipe, 0, tmp_path / "work")
    assert row2 == row and len(store.find(kind="train")) == 1

    legacy = {k: v for k, v in row.items() if k != "weights"}
    (tmp_path / "rows.jsonl").write_text(json.dumps(legacy) + "\n")
    store = C.Store(tmp_path / "rows.jsonl")
    _, row3 = C.train_arm(store, "t", "a", recipe, 0, tmp_path / "work")
    assert row3["weights"] == row["weights"] and row3["digest_added"] and len(store.find(kind="train")) == 2

    parent = {"arm": "a", "weights": row["weights"]}
    _, d1 = C.train_arm(store, "t", "d", recipe, 0, tmp_path / "work", parent=parent)
    assert (d1["parent_arm"], d1["parent_weights"]) == ("a", row["weights"])
    _, d2 = C.train_arm(store, "t", "d", recipe, 0, tmp_path / "work", parent=parent)
    assert d2 == d1 and len(store.find(kind="train", arm="d")) == 1
    _, d3 = C.train_arm(store, "t", "d", recipe, 0, tmp_path / "work", parent={**parent, "weights": "other"})
    assert d3["parent_weights"] == "other" and len(store.find(kind="train", arm="d")) == 2


def test_recipe_hash_ignores_threads_and_follows_params(C):
    r = C.Recipe("mnist", "dq", 32, 4, act_only=True, params=(("beta", 3e-4),))
    a, b = C.run_config(r, 0, threads=1), C.run_config(r, 0, threads=2)
    assert C.config_hash(a) == C.config_hash(b)
    assert C.config_hash(C.run_config(r.with_params(beta=3e-3), 0)) != C.config_hash(a)
    assert C.config_hash(C.run_config(r, 1)) != C.config_hash(a)


def test_per_model_values_need_three_seeds_and_drops_have_no_floor(C):
    value = C.Claim("P", "x", "a", "b", "zero channels", "superior", 0.0, 1, accuracy=False)
    one = C.judge(value, [0], lambda arm, s: np.array([0.3 if arm == "a" else 0.1]))
    assert one.verdict.startswith("inconclusive (one value per model: needs 3 seeds")
    three = C.judge(value, [0, 1, 2], lambda arm, s: np.array([0.3 + 0.01 * s if arm == "a" else 0.1 + 0.01 * s]))
    assert three.verdict == "reproduced" and three.mcnemar is None
    # per-point losses (float minus quantized) of 0 or 1: both near 0 is no floor, and no McNemar
    drop = C.Claim("P", "x", "a", "b", "drop", "superior", 0.0, 1000, floor=False)
    a = np.r_[np.ones(60), np.zeros(940)]
    b = np.r_[np.ones(10), np.zeros(990)]
    j = C.judge(drop, [0, 1, 2], lambda arm, s: a if arm == "a" else b)
    assert j.verdict == "reproduced"
    assert "+5.0 [+" in "\n".join(C.claim_table([j]))


def test_page_counts_only_the_current_arms_rows(C, tmp_path):
    """An arm retrained under a changed recipe: its old rows no longer count toward the page's
    commands and point counts; no points at all is no outcome."""
    store = C.Store(tmp_path / "rows.jsonl")
    store.add({"kind": "train", "arm": "a", "seed": 0, "hash": "old", "command": "python old"})
    store.add({"kind": "eval", "arm": "a", "seed": 0, "hash": "old", "eps": 0.1, "set": "pgd20", "start": 0, "n": 1000,
               "code": "R" * 1000})
    assert C.max_points(store, set="pgd20") == 1000 and C.commands(store) == ["python old"]
    store.add({"kind": "train", "arm": "a", "seed": 0, "hash": "new", "command": "python new"})
    store.add({"kind": "train", "arm": "b", "seed": 0, "hash": "hb", "command": "python new"})
    assert C.current_hashes(store) == {"new", "hb"}
    assert C.max_points(store, set="pgd20") == 0 and C.commands(store) == ["python new"]
    store.add({"kind": "eval", "arm": "a", "seed": 0, "hash": "new", "eps": 0.1, "set": "pgd20", "start": 0, "n": 500,
               "code": "R" * 500})
    assert C.max_points(store, set="pgd20") == 500 and C.max_points(store, set="fgsm") == 0
    assert C.outcome(store, "a", 0, "robust@0.1/pgd20", 0) is None


def _lwq(C):
    spec = importlib.util.spec_from_file_location("claim_lwq", REPO / "bench" / "claim_lwq.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lwq_plot_averages_the_seeds_each_arm_has_and_is_reproducible(C, tmp_path):
    """The LWQ figure's values are per-arm means over the seeds present (a missing seed is not a
    zero); the same rows give the same PNG bytes."""
    L = _lwq(C)
    eps = L.EPS
    store = _store(C, tmp_path, {("bound@2b-ft1", 0): "RRCA", ("bound@2b-ft1", 1): "RACC",
                                 ("error@2b-ft1", 0): "RRRR"}, eps=eps, sets=("standard",))
    for row in store.find(kind="train"):
        row["clean_acc"] = {0: 0.5, 1: 0.7}[row["seed"]]
    metric = f"robust@{eps}/standard"
    assert L._mean_over_seeds(store, "bound@2b-ft1", metric, 4) == pytest.approx(100 * (2 / 4 + 1 / 4) / 2)
    assert L._mean_over_seeds(store, "error@2b-ft1", metric, 4) == pytest.approx(100.0)
    assert L._mean_over_seeds(store, "bound@2b-ft1", "clean", 4) == pytest.approx(60.0)
    assert np.isnan(L._mean_over_seeds(store, "uniform@2b-ft1", metric, 4))
    md = tmp_path / "results.md"
    lines = L.plots(store, md, 4)
    png = tmp_path / "results-lwq.png"
    assert lines[0].endswith("(results-lwq.png)") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = png.read_bytes()
    L.plots(store, md, 4)
    assert png.read_bytes() == first


def test_odgq_plot_draws_what_is_there(C, tmp_path):
    """The ODG-Q figure from a store where one arm has two seeds, one has one and the rest none."""
    spec = importlib.util.spec_from_file_location("claim_odgq", REPO / "bench" / "claim_odgq.py")
    O = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(O)
    store = _store(C, tmp_path, {("odgq@8", 0): "RRCA", ("odgq@8", 1): "RACC", ("pgd-at@8", 0): "RRRA"},
                   eps=O.EPS, sets=("standard",))
    for (a, s), code in {("odgq@8", 0): "RRRR", ("odgq@8", 1): "RRRR", ("pgd-at@8", 0): "RRRR"}.items():
        store.add({"kind": "eval", "arm": a, "seed": s, "hash": f"h{a}{s}", "eps": O.EPS, "set": "transfer",
                   "start": 0, "n": 4, "code": code, "source": O.SURROGATE})
    assert O.C.outcome(store, "odgq@8", 1, O.worst(4), 4).tolist() == [True, False, False, False]
    lines = O.plots(store, tmp_path / "results.md", ["8"])
    assert lines[0].endswith("(results-odgq.png)") and (tmp_path / "results-odgq.png").stat().st_size > 0
    assert O.source_note(store, "8") == ("Transfer source at this width: weights not recorded "
                                         "(rows from before weight digests).")
    assert O.source_note(store, "4") == ""
    store.add({"kind": "train", "arm": "odgq@4", "seed": 0, "hash": "h4", "weights": "w4"})
    store.add({"kind": "eval", "arm": "odgq@4", "seed": 0, "hash": "h4", "eps": O.EPS, "set": "transfer", "start": 0,
               "n": 4, "code": "RRRR", "source": O.SURROGATE, "weights": "w4", "source_weights": {"x": "s1"}})
    assert O.source_note(store, "4") == "Transfer source at this width: weights `s1`."
