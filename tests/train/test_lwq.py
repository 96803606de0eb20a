"""Layer-wise quantization: the bound, the budgeted allocation, and the rebuilt checkpoint."""
import itertools

import pytest
import torch

from robustq_deploy.errors import ConfigError
from robustq_deploy.quant import quant_layers
from robustq_deploy.train import read_checkpoint, save_checkpoint, train_model
from robustq_deploy.train.methods.lwq import Candidate, allocate, bound

from .conftest import digits_config


def test_bound_hand_case():
    # 0.5 * (2 * 3) + 0.1 * 1 * 3 + 0.2 * 2 * 1
    choice = [Candidate(8, None, 2.0, 0.1), Candidate(8, None, 3.0, 0.2)]
    assert bound(choice, [1.0, 2.0], 0.5) == pytest.approx(3.7)


def _options(layer_scale):
    # error halves per extra bit, Lipschitz grows with the error; clipping trades error for Lipschitz
    return [[Candidate(b, clip, 1.0 + e * (1 if clip is None else 0.5), e * (1 if clip is None else 1.5))
             for b, e in ((8, 0.01 * s), (4, 0.16 * s), (2, 0.64 * s)) for clip in (None, 0.8)]
            for s in layer_scale]


def test_allocation_meets_the_budget_and_matches_exhaustive_search():
    options, sizes, rho = _options([1.0, 3.0, 0.5]), [100, 400, 50], [2.0, 1.0, 4.0]
    budget = 4.5 * sum(sizes)
    choice = allocate(options, sizes, rho, 0.3, budget)
    assert sum(n * c.storage for n, c in zip(sizes, choice)) <= budget
    best = min((ch for ch in itertools.product(*options)
                if sum(n * c.storage for n, c in zip(sizes, ch)) <= budget), key=lambda ch: bound(list(ch), rho, 0.3))
    assert bound(choice, rho, 0.3) == pytest.approx(bound(list(best), rho, 0.3))
    uniform4 = [next(c for c in opts if c.bits == 4 and c.clip is None) for opts in options]
    assert bound(choice, rho, 0.3) <= bound(uniform4, rho, 0.3)


def _shrinking_options(n_layers):
    # the bound prefers the narrowest widths: Lipschitz falls faster with the width than error grows
    return [[Candidate(b, None, lip, err) for b, lip, err in ((8, 3.0, 0.01), (4, 2.0, 0.05), (2, 1.0, 0.2))]
            for _ in range(n_layers)]


def test_min_fill_holds_the_size_near_the_budget_and_matches_exhaustive_search():
    options, sizes, rho = _shrinking_options(3), [100, 400, 50], [1.0, 1.0, 1.0]
    budget = 4.0 * sum(sizes)
    free = allocate(options, sizes, rho, 0.3, budget)
    assert sum(n * c.storage for n, c in zip(sizes, free)) / sum(sizes) < 3.0  # the bound alone shrinks it
    floor = 0.9 * budget
    held = allocate(options, sizes, rho, 0.3, budget, floor)
    size = sum(n * c.storage for n, c in zip(sizes, held))
    assert floor <= size <= budget
    best = min((ch for ch in itertools.product(*options)
                if floor <= sum(n * c.storage for n, c in zip(sizes, ch)) <= budget),
               key=lambda ch: bound(list(ch), rho, 0.3))
    assert bound(held, rho, 0.3) == pytest.approx(bound(list(best), rho, 0.3))


@pytest.mark.parametrize("budget_bits", [4.0, 4.5])
def test_min_fill_raises_a_large_layer_by_lowering_small_ones(budget_bits):
    # the descent lowers the large layer first (the least bound increase per bit saved) and ends at
    # 8, 8, 2 (3 bits/weight); the floor needs the large layer at 4 bits, which only fits if the
    # small layers give way
    options, sizes, rho = _options([1.0, 1.0, 0.2]), [10, 10, 100], [1.0, 1.0, 1.0]
    budget = budget_bits * sum(sizes)
    assert [c.bits for c in allocate(options, sizes, rho, 0.3, budget)] == [8, 8, 2]
    floor = 0.9 * budget
    held = allocate(options, sizes, rho, 0.3, budget, floor)
    assert floor <= sum(n * c.storage for n, c in zip(sizes, held)) <= budget and held[2].bits == 4
    best = min((ch for ch in itertools.product(*options)
                if floor <= sum(n * c.storage for n, c in zip(sizes, ch)) <= budget),
               key=lambda ch: bound(list(ch), rho, 0.3))
    assert bound(held, rho, 0.3) == pytest.approx(bound(list(best), rho, 0.3))


def test_min_fill_out_of_reach_keeps_the_largest_size_within_the_budget():
    options, sizes = _shrinking_options(2), [100, 100]
    # 5.5 bits per weight: the sizes within the budget are 10, 8, 6 and 4 (x 100 bits); none reaches it
    held = allocate(options, sizes, [1.0, 1.0], 0.3, 5.5 * 200, 5.5 * 200)
    assert sum(n * c.storage for n, c in zip(sizes, held)) in (800, 1000)  # a single-layer climb reaches one of them


def test_min_fill_is_validated():
    with pytest.raises(ConfigError, match="min_fill"):
        train_model(digits_config("lwq", 4, params={"min_fill": 1.5}), progress=False)


def test_budget_below_every_candidate_is_refused():
    with pytest.raises(ConfigError, match="below the smallest candidate"):
        allocate(_options([1.0]), [10], [1.0], 0.1, 1.0 * 10)


def test_lwq_chooses_under_the_budget_and_the_checkpoint_rebuilds_it(tmp_path):
    cfg = digits_config("lwq", 4, params={"teacher_epochs": 1, "calib": 64, "budget_bits": 3.0})
    model, metrics, run_cfg = train_model(cfg, progress=False)
    report = metrics["lwq"]
    assert report["bits_per_weight"] <= 3.0
    chosen = {r["layer"]: (r["bits"], r["clip"]) for r in report["layers"]}
    assert {n: (q.weight_bits, q.weight_clip) for n, q in run_cfg.quant.layers.items()} == chosen
    assert len({b for b, _ in chosen.values()}) > 1  # mixed precision under a 3-bit average
    for name, layer in quant_layers(model):
        assert (layer.w_q.bits, layer.w_q.clip) == chosen[name]
    path = tmp_path / "lwq.safetensors"
    save_checkpoint(model, run_cfg, path, metrics)
    again, cfg2 = read_checkpoint(path)
    for (name, a), (_, b) in zip(quant_layers(model), quant_layers(again)):
        assert (a.w_q.bits, a.w_q.clip) == (b.w_q.bits, b.w_q.clip) == chosen[name]
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_uniform_allocation_and_a_teacher_checkpoint(tmp_path):
    teacher, tmetrics, tcfg = train_model(digits_config("fgsm-rs", 32), progress=False)
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher, tcfg, path, tmetrics)
    cfg = digits_config("lwq", 4, params={"teacher": str(path), "allocation": "uniform", "calib": 64})
    _, metrics, run_cfg = train_model(cfg, progress=False)
    assert {(r["bits"], r["clip"]) for r in metrics["lwq"]["layers"]} == {(4, None)}
    assert metrics["lwq"]["bits_per_weight"] == 4.0
