"""PGD and FGSM against an independent implementation (torchattacks, installed for tests only:
``pip install --no-deps torchattacks scipy requests``) on a float MNIST model, same settings.

The default test compares without random start (both runs deterministic, so any difference is an
implementation difference); the slow one compares the usual randomly started PGD-40 on 1000
points, where the two random number streams differ and the 1-point tolerance covers it.
"""
import pytest
import torch
import torchattacks

from robustq_deploy.attacks import ThreatModel, make_attack, pgd

N = 100
STEPS = 10


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_linf_pgd_matches_torchattacks(float_mnist, mnist_test, eps):
    x, y = mnist_test[0][:N], mnist_test[1][:N]
    alpha = 2.5 * eps / STEPS
    ours = pgd(float_mnist, x, y, ThreatModel("linf", eps, grid=None), steps=STEPS, step_size=alpha, random_start=False)
    theirs = torchattacks.PGD(float_mnist, eps=eps, alpha=alpha, steps=STEPS, random_start=False)(x, y)
    a, b = _acc(float_mnist, ours, y), _acc(float_mnist, theirs, y)
    assert abs(a - b) <= 0.01, (eps, a, b)
    assert a < _acc(float_mnist, x, y)  # the attack does something at every radius


def test_l2_pgd_and_fgsm_match_torchattacks(float_mnist, mnist_test):
    x, y = mnist_test[0][:N], mnist_test[1][:N]
    ours = pgd(float_mnist, x, y, ThreatModel("l2", 2.0, grid=None), steps=STEPS, step_size=0.5, random_start=False)
    theirs = torchattacks.PGDL2(float_mnist, eps=2.0, alpha=0.5, steps=STEPS, random_start=False)(x, y)
    assert abs(_acc(float_mnist, ours, y) - _acc(float_mnist, theirs, y)) <= 0.01
    ours = make_attack("fgsm", ThreatModel("linf", 0.2, grid=None)).perturb(float_mnist, x, y)
    theirs = torchattacks.FGSM(float_mnist, eps=0.2)(x, y)
    assert abs(_acc(float_mnist, ours, y) - _acc(float_mnist, theirs, y)) <= 0.01


def test_restarts_keep_first_fooling_restart(digits_float, digits_test):
    x, y = digits_test[0][:64], digits_test[1][:64]
    th = ThreatModel("linf", 0.15)
    one = pgd(digits_float, x, y, th, steps=5, restarts=1, generator=torch.Generator().manual_seed(0))
    three = pgd(digits_float, x, y, th, steps=5, restarts=3, generator=torch.Generator().manual_seed(0))
    assert _acc(digits_float, three, y) <= _acc(digits_float, one, y)
    assert float(th.dist(three, x).max()) <= 0.15 + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_random_start_pgd40_matches_torchattacks_on_1000_points(float_mnist, mnist_test, eps):
    x, y = mnist_test[0][:1000], mnist_test[1][:1000]
    alpha = 2.5 * eps / 40
    torch.manual_seed(0)
    ours = pgd(float_mnist, x, y, ThreatModel("linf", eps, grid=None), steps=40, step_size=alpha,
               generator=torch.Generator().manual_seed(0))
    theirs = torchattacks.PGD(float_mnist, eps=eps, alpha=alpha, steps=40, random_start=True)(x, y)
    assert abs(_acc(float_mnist, ours, y) - _acc(float_mnist, theirs, y)) <= 0.01
