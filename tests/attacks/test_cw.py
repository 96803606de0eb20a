"""Carlini-Wagner L2: minimal adversarial perturbations inside the box, L2 threats only."""
import pytest
import torch

from robustq_deploy.attacks import ThreatModel, make_attack
from robustq_deploy.errors import ConfigError


def test_cw_finds_small_l2_perturbations(digits_float, digits_test):
    x, y = digits_test[0][:48], digits_test[1][:48]
    th = ThreatModel("l2", 1.5, grid=None)
    adv = make_attack("cw-l2", th, {"steps": 50, "binary_steps": 3, "lr": 0.05}).perturb(digits_float, x, y)
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(th.dist(adv, x).max()) <= 1.5 + 1e-5
    with torch.no_grad():
        fooled = digits_float(adv).argmax(1) != y
        clean_ok = digits_float(x).argmax(1) == y
    assert float((fooled & clean_ok).float().sum()) >= 0.3 * float(clean_ok.float().sum())
    # minimal: CW's perturbations are shorter than the radius it was allowed
    assert float(th.dist(adv, x)[fooled & clean_ok].mean()) < 1.5


def test_cw_refuses_linf_threats():
    with pytest.raises(ConfigError, match="cw-l2' supports l2 threats, not linf"):
        make_attack("cw-l2", ThreatModel("linf", 0.1))
