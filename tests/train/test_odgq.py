"""ODG-Q: the domain objective, its cost per step, and the replayed adversaries."""
import pytest
import torch
from torch import nn

from robustq_deploy.models import build_model
from robustq_deploy.train import make_method
from robustq_deploy.train.base import PrepareContext, StepContext
from robustq_deploy.train.methods.odgq import domain_objective

from .conftest import digits_config


def test_domain_objective_hand_case():
    # risks [1, 3]: mean 2, population variance 1 -> 2 + 0.5 * 1
    assert domain_objective(torch.tensor([1.0, 3.0]), 0.5).item() == pytest.approx(2.5)
    assert domain_objective(torch.tensor([2.0, 2.0]), 10.0).item() == pytest.approx(2.0)


class CountingNet(nn.Module):
    """Wraps a model and counts the examples of every forward pass."""

    def __init__(self, net):
        super().__init__()
        self.net, self.examples, self.last = net, 0, None

    def forward(self, x):
        self.examples += len(x)
        self.last = x.detach()  # after a step: the inputs of the training pass
        return self.net(x)


def _step(method_name, **params):
    cfg = digits_config(method_name, 8, params=params)
    torch.manual_seed(0)
    net = CountingNet(build_model("digits-cnn", cfg.quant, 10, (1, 8, 8)))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    method = make_method(cfg.train)
    method.prepare(net, PrepareContext(cfg, x, y, torch.device("cpu"), False))
    ctx = StepContext(0, 0, 0.1, torch.Generator().manual_seed(1), torch.arange(64))
    net.train()
    loss = method.loss(net, x, y, ctx)
    loss.backward()
    method.after_backward(net, ctx)
    return net.examples, method, x, net.last


def test_cost_per_step_is_close_to_natural_training():
    natural, *_ = _step("natural")
    odgq, *_ = _step("odgq")
    pgd, *_ = _step("pgd-at")
    assert natural == 64
    assert odgq == 64 + 32  # one training pass plus one attack pass over the two fresh domains' half
    assert pgd == 64 * 3  # two PGD steps plus the training pass


def test_replay_buffer_advances_inside_the_ball():
    _, method, x, _ = _step("odgq")
    d = method.buffer.float()
    assert d.abs().max() <= 0.1 + 1e-3  # float16 storage
    assert ((x + d) >= -1e-3).all() and ((x + d) <= 1 + 1e-3).all()
    # the replay step moved the buffered perturbations beyond where the attack left them
    _, no_replay_step, _, _ = _step("odgq", replay_step=0.0)
    assert not torch.equal(method.buffer, no_replay_step.buffer)
    # and every example of the batch left its random initialisation
    init = make_method(digits_config("odgq", 8).train)
    init.prepare(None, PrepareContext(digits_config("odgq", 8), x, torch.zeros(64, dtype=torch.long),
                                      torch.device("cpu"), False))
    assert (method.buffer != init.buffer).flatten(1).any(1).all()


def test_fresh_radii_reach_eps_max():
    """Fresh domains draw radii in [eps_min, eps_max] * eps; replayed ones stay in the eps ball."""
    _, _, x, trained = _step("odgq")
    assert (trained - x).abs().max() <= 0.1 + 1e-6
    _, _, x, trained = _step("odgq", eps_min=1.0, eps_max=1.5)
    dist = (trained - x).abs().flatten(1).amax(1)
    assert dist.max() > 0.1 + 1e-3 and dist.max() <= 0.15 + 1e-6
    assert (dist <= 0.1 + 1e-6).sum() >= 32  # the two replay domains' half of the batch


@pytest.mark.parametrize("params", [{"eps_max": 0.9}, {"eps_min": 0.0}, {"eps_min": 1.1, "eps_max": 1.2}])
def test_bad_radii_are_refused(params):
    from robustq_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="eps_min <= 1 <= eps_max"):
        make_method(digits_config("odgq", 8, params=params).train)
