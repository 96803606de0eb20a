"""ThreatModel: projection, random starts and grid rounding never leave the ball or the box."""
import pytest
import torch

from robustq_deploy.attacks import ThreatModel
from robustq_deploy.errors import ConfigError

GRID = 1.0 / 255.0


def _pixels(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 6, 6), generator=g).float() / 255.0


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("linf", 0.3), ("l2", 0.5), ("l2", 2.0)])
def test_project_random_start_and_grid_stay_inside(norm, eps):
    th = ThreatModel(norm, eps)
    x = _pixels()
    g = torch.Generator().manual_seed(1)
    wild = x + torch.randn(x.shape, generator=g) * 3
    for pt in (th.project(wild, x), th.random_start(x, g), th.to_grid(th.project(wild, x), x)):
        assert float(th.dist(pt, x).max()) <= eps + 1e-5
        assert float(pt.min()) >= 0 and float(pt.max()) <= 1
    on_grid = th.to_grid(th.project(wild, x), x)
    assert torch.allclose(on_grid / GRID, torch.round(on_grid / GRID), atol=1e-4)


def test_to_grid_rounds_toward_x_only_when_needed():
    th = ThreatModel("linf", 0.1)
    x = torch.full((1, 1, 1, 2), 100 / 255)
    # 0.1 * 255 = 25.5 levels: nearest (126) leaves the ball, so it rounds toward x (125)
    adv = x + torch.tensor([0.1, 0.05]).view(1, 1, 1, 2)
    levels = torch.round(th.to_grid(adv, x) * 255).flatten().tolist()
    assert levels == [125.0, 113.0]


def test_normalized_step():
    g = torch.tensor([[[[3.0, -4.0]]]])
    assert ThreatModel("linf").normalized_step(g).flatten().tolist() == [1.0, -1.0]
    assert ThreatModel("l2").normalized_step(g).flatten().tolist() == pytest.approx([0.6, -0.8])


@pytest.mark.parametrize("kw,msg", [({"norm": "l1"}, "norm 'l1'"), ({"eps": -0.1}, "eps must be >= 0"),
                                    ({"lo": 1.0, "hi": 0.0}, "is empty"), ({"grid": 0.0}, "grid must be positive")])
def test_invalid_threat_is_a_config_error(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        ThreatModel(**kw)
