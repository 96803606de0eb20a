"""Every registered attack, for every norm it supports, keeps to its threat model and to its
generator: its points lie in the ball and the [0, 1] box, rounding them to the deployed input
grid keeps them there, and the same seed gives the same points (the registry is iterated: a new
attack is held to this the day it is registered)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from robustq_deploy.attacks import ThreatModel, attack_names, make_attack
from robustq_deploy.attacks.base import attack_class

EPS = {"linf": 0.1, "l2": 0.5}
CASES = [(name, norm) for name in attack_names() for norm in attack_class(name).norms]
SMALL = {"steps": 3, "restarts": 1, "queries": 60, "binary_steps": 2, "targets": 2}  # short budgets


def small_params(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(attack_class(name).Params)}
    return {k: v for k, v in SMALL.items() if k in fields}


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_attack_keeps_to_its_threat_model_and_seed(digits_float, digits_test, name, norm):
    x, y = digits_test[0][:12], digits_test[1][:12]
    threat = ThreatModel(norm, EPS[norm])
    attack = make_attack(name, threat, small_params(name))
    runs = [attack.perturb(digits_float, x, y, torch.Generator().manual_seed(7)) for _ in range(2)]
    x_adv = runs[0]
    assert x_adv.shape == x.shape and torch.isfinite(x_adv).all()
    assert torch.equal(runs[0], runs[1]), "the same generator seed gave different points"
    for pts in (x_adv, threat.to_grid(x_adv, x)):
        assert pts.min() >= 0 and pts.max() <= 1, "left the [0, 1] box"
        assert (threat.dist(pts, x) <= EPS[norm] * (1 + 1e-5) + 1e-6).all(), "left the threat ball"
    on_grid = threat.to_grid(x_adv, x) / threat.grid
    assert torch.allclose(on_grid, on_grid.round(), atol=1e-3), "to_grid left points off the input grid"
