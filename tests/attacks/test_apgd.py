"""APGD (Croce & Hein 2020): the checkpoint schedule of the paper, the threat constraint, and
agreement with torchattacks' port of the reference implementation (slow)."""
import pytest
import torch
import torchattacks

from robustq_deploy.attacks import ThreatModel, make_attack
from robustq_deploy.attacks.base import scored_wrong
from robustq_deploy.attacks.apgd import checkpoint_intervals


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): 0.22, 0.41, 0.57, 0.70, ...
    cum, total = [], 0
    for k in checkpoint_intervals(100):
        total += k
        cum.append(total)
    assert cum == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoint_intervals(5) == [1, 1, 1, 1, 1]


@pytest.mark.parametrize("name,norm,eps", [("apgd-ce", "linf", 0.15), ("apgd-dlr", "linf", 0.15), ("apgd-ce", "l2", 1.0)])
def test_apgd_stays_inside_and_beats_fgsm(digits_float, digits_test, name, norm, eps):
    x, y = digits_test[0][:96], digits_test[1][:96]
    th = ThreatModel(norm, eps)
    adv = make_attack(name, th, {"steps": 20}).perturb(digits_float, x, y, torch.Generator().manual_seed(0))
    assert float(th.dist(adv, x).max()) <= eps + 1e-5 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    fgsm = make_attack("fgsm", th).perturb(digits_float, x, y)
    assert _acc(digits_float, adv, y) <= _acc(digits_float, fgsm, y)


def test_apgd_is_reproducible(digits_float, digits_test):
    x, y = digits_test[0][:32], digits_test[1][:32]
    a = make_attack("apgd-ce", ThreatModel("linf", 0.1), {"steps": 10})
    first = a.perturb(digits_float, x, y, torch.Generator().manual_seed(3))
    assert torch.equal(first, a.perturb(digits_float, x, y, torch.Generator().manual_seed(3)))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_apgd_matches_torchattacks(float_mnist, mnist_test, loss, eps):
    x, y = mnist_test[0][:200], mnist_test[1][:200]
    th = ThreatModel("linf", eps, grid=None)
    ours = make_attack(f"apgd-{loss}", th, {"steps": 50}).perturb(float_mnist, x, y, torch.Generator().manual_seed(0))
    theirs = torchattacks.APGD(float_mnist, eps=eps, steps=50, n_restarts=1, loss=loss, seed=0)(x, y)
    assert abs(_acc(float_mnist, ours, y) - _acc(float_mnist, theirs, y)) <= 0.015


class OffGridDetector(torch.nn.Module):
    """Wrong (class 1) exactly when some pixel lies off the pixel grid: every continuous iterate
    looks adversarial, no scored (rounded) input is."""

    def forward(self, x):
        levels = x * 255
        off = ((levels - torch.round(levels)).abs() - 1e-3).clamp(min=0).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(off), 1000 * off], 1)


def test_success_is_judged_on_the_input_grid(digits_test):
    x = torch.round(digits_test[0][:8] * 255) / 255
    y = torch.zeros(8, dtype=torch.long)
    th = ThreatModel("linf", 0.1)
    model = OffGridDetector()
    assert not scored_wrong(model, th, x + 0.3 / 255, x, y).any()
    adv = make_attack("apgd-ce", th, {"steps": 5}).perturb(model, x, y, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(adv).argmax(1) == 1).all()  # continuous points fooled, yet not counted:
        assert (model(th.to_grid(adv, x)).argmax(1) == 0).all()  # on the grid the model is right
