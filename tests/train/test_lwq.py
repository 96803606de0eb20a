"""Layer-wise quantization: the bound, the budgeted allocation, and the rebuilt checkpoint."""
import itertools

import pytest
import torch

from robustq_deploy.errors import ConfigError
from robustq_deploy.quant import quant_layers
from robustq_deploy.train import read_checkpoint, save_checkpoint, train_model
from robustq_deploy.train.methods.lwq import Candidate, allocate, allocate_error_only, bound

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


def test_error_only_allocation_minimizes_the_error_term_by_exhaustive_search():
    options, sizes, rho = _options([1.0, 3.0, 0.5]), [100, 400, 50], [2.0, 1.0, 4.0]
    budget = 4.5 * sum(sizes)
    choice = allocate_error_only(options, sizes, rho, budget)
    assert all(c in opts for c, opts in zip(choice, options))  # the real candidates, Lipschitz and all
    assert sum(n * c.storage for n, c in zip(sizes, choice)) <= budget

    def err(ch):
        return sum(c.error * r for c, r in zip(ch, rho))

    best = min((ch for ch in itertools.product(*options)
                if sum(n * c.storage for n, c in zip(sizes, ch)) <= budget), key=lambda ch: err(list(ch)))
    assert err(choice) == pytest.approx(err(list(best)))
    # clipping lowers the Lipschitz constant and raises the error: with a large adversarial term
    # the bound clips every layer, the error term alone never clips
    assert all(c.clip is None for c in choice)
    assert all(c.clip is not None for c in allocate(options, sizes, rho, 10.0, budget))


def test_student_keeps_its_pixel_grid_and_observes_activations_before_fine_tuning(tmp_path):
    """A float teacher's quantizer state (scale 1, never observed) must not reach the student."""
    from robustq_deploy.models import build_model
    from robustq_deploy.train import make_method
    from robustq_deploy.train.base import PrepareContext
    from robustq_deploy.checkpoint import load_split

    teacher, tmetrics, tcfg = train_model(digits_config("natural", 32, epochs=2, lr=1e-2), progress=False)
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher, tcfg, path, tmetrics)
    cfg = digits_config("lwq", 8, params={"teacher": str(path), "allocation": "uniform", "bits": [8], "calib": 128})
    x, y, _ = load_split(cfg, "train")
    method = make_method(cfg.train)
    student = method.prepare(build_model("digits-cnn", cfg.quant, 10, (1, 8, 8)),
                             PrepareContext(cfg, x, y, torch.device("cpu"), False)).eval()
    assert float(student.conv1.in_q.scale) == pytest.approx(1 / 255)
    for name in ("conv2", "fc1", "fc2"):
        q = getattr(student, name).in_q
        assert bool(q.observed) and float(q.scale) != 1.0
    for (_, a), (_, b) in zip(quant_layers(student), quant_layers(teacher)):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    tx, ty, _ = load_split(cfg, "test")
    with torch.no_grad():
        agree = (student(tx).argmax(1) == teacher(tx).argmax(1)).float().mean()
    assert agree >= 0.9  # 8-bit post-training quantization of a working model mostly agrees with it
