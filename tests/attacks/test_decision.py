"""RayS, the decision-based attack: it sees only labels, every query lies on the uint8 grid, each
point gets at most its query budget, and what it returns lies in the threat ball."""
import torch

from robustq_deploy.attacks import ThreatModel, make_attack
from robustq_deploy.attacks.ensemble import CountingModel


class LabelsOnly:
    """A classifier that returns one-hot labels (an engine whose graph ends in ArgMax); records
    every image it is shown."""

    def __init__(self, model):
        self.model = model
        self.seen = []

    def __call__(self, x):
        self.seen.append(x.clone())
        with torch.no_grad():
            return torch.nn.functional.one_hot(self.model(x).argmax(1), 10).float()


def test_rays_with_labels_only(digits_float, digits_test):
    x, y = digits_test[0][:48], digits_test[1][:48]
    th = ThreatModel("linf", 0.2)
    black = LabelsOnly(digits_float)
    counted = CountingModel(black)
    adv = make_attack("rays", th, {"queries": 200}).perturb(counted, x, y)
    assert counted.queries <= 200 * len(x) + len(x)  # the budget, plus the first ray's probe
    assert float(th.dist(adv, x).max()) <= 0.2 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    for seen in black.seen:
        assert torch.allclose(seen * 255, torch.round(seen * 255), atol=1e-4)  # on the pixel grid
    with torch.no_grad():
        clean = float((digits_float(x).argmax(1) == y).float().mean())
        robust = float((digits_float(th.to_grid(adv, x)).argmax(1) == y).float().mean())
    assert robust < clean - 0.2
