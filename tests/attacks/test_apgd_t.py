"""Targeted APGD (AutoAttack's APGD-T): the targeted DLR loss, the target classes in order of the
clean logits, the threat constraint, and that it breaks points APGD-CE left standing."""
import torch

from robustq_deploy.attacks import ThreatModel, make_attack
from robustq_deploy.attacks.base import scored_wrong
from robustq_deploy.attacks.losses import targeted_dlr


def test_targeted_dlr_is_autoattacks():
    z = torch.tensor([[5.0, 1.0, 3.0, 2.0, 0.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    assert torch.allclose(targeted_dlr(t)(z, y), torch.tensor([-(5.0 - 3.0) / (5.0 - (2.0 + 1.0) / 2)]))


def test_apgd_t_stays_inside_and_breaks_more_than_apgd_ce(digits_float, digits_test):
    x, y = digits_test[0][:96], digits_test[1][:96]
    th = ThreatModel("linf", 0.1)
    gen = torch.Generator().manual_seed(0)
    ce = make_attack("apgd-ce", th, {"steps": 20}).perturb(digits_float, x, y, gen)
    left = ~scored_wrong(digits_float, th, ce, x, y)
    t = make_attack("apgd-t", th, {"steps": 20, "targets": 3})
    adv = t.perturb(digits_float, x[left], y[left], gen)
    assert float(th.dist(adv, x[left]).max()) <= 0.1 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert int(scored_wrong(digits_float, th, adv, x[left], y[left]).sum()) > 0  # points APGD-CE left
    assert t.describe()["params"] == {"steps": 20, "restarts": 1, "targets": 3, "random_start": True}
