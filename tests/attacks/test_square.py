"""Square Attack (L-inf): the p schedule, the query budget, the threat and grid constraints, and
that it needs nothing but logits (a numpy black box)."""
import numpy as np
import pytest
import torch

from robustq_deploy.attacks import ThreatModel, make_attack
from robustq_deploy.attacks.ensemble import CountingModel
from robustq_deploy.attacks.square import p_selection
from robustq_deploy.errors import ConfigError


def test_p_schedule_halves_at_the_papers_iterations():
    # thresholds out of 10000 iterations: 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
    assert p_selection(0.8, 10, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 51, 10000) == 0.2
    assert p_selection(0.8, 8001, 10000) == pytest.approx(0.8 / 512)
    assert p_selection(0.8, 2, 1000) == 0.4  # 20 out of 10000 after rescaling


class NumpyBlackBox:
    """The float model behind a numpy boundary: no autograd graph can reach it."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().numpy().astype(np.float32)
        with torch.no_grad():
            return torch.from_numpy(self.model(torch.from_numpy(arr)).numpy())


def test_square_budget_constraint_and_success(digits_float, digits_test):
    x, y = digits_test[0][:64], digits_test[1][:64]
    th = ThreatModel("linf", 0.2)
    counted = CountingModel(NumpyBlackBox(digits_float))
    adv = make_attack("square", th, {"queries": 150}).perturb(counted, x, y, torch.Generator().manual_seed(0))
    assert counted.queries <= 150 * len(x)
    assert float(th.dist(adv, x).max()) <= 0.2 + 1e-6
    assert torch.allclose(adv * 255, torch.round(adv * 255), atol=1e-3)  # every query was on the pixel grid
    with torch.no_grad():
        clean = float((digits_float(x).argmax(1) == y).float().mean())
        robust = float((digits_float(adv).argmax(1) == y).float().mean())
    assert robust < clean - 0.2


def test_square_stops_querying_fooled_points(digits_float, digits_test):
    x, y = digits_test[0][:32], digits_test[1][:32]
    counted = CountingModel(digits_float)
    make_attack("square", ThreatModel("linf", 0.5), {"queries": 200}).perturb(counted, x, y, torch.Generator().manual_seed(0))
    assert counted.queries < 0.5 * 200 * len(x)  # at eps 0.5 most points fall early


def test_square_is_linf_only():
    with pytest.raises(ConfigError, match="supports linf threats, not l2"):
        make_attack("square", ThreatModel("l2", 1.0))
