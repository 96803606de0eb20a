"""The ibp method: sound interval bounds through the fake-quant twin, its schedule, and training
that makes the deployed integer model certifiable."""
from __future__ import annotations

import pytest
import torch

from robustq_deploy.config import QuantConfig, RunConfig
from robustq_deploy.errors import ConfigError, UnsupportedError
from robustq_deploy.models import build_model
from robustq_deploy.train import resolve_params, train_model
from robustq_deploy.train.methods.ibp import IBP, IntervalTwin, ramp

from .conftest import digits_config


def calibrated(arch: str, quant: QuantConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = build_model(arch, quant, 10, (1, 8, 8))
    m.train()
    with torch.no_grad():
        m(torch.rand(64, 1, 8, 8))
    return m.eval()


@pytest.mark.parametrize("arch", ["digits-cnn", "mnist-cnn"])
@pytest.mark.parametrize("bits", [8, 32])
def test_bounds_contain_the_twin_on_the_ball(arch, bits):
    m = calibrated(arch, QuantConfig(weight_bits=bits, act_bits=bits))
    twin = IntervalTwin(m)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    eps = 0.05
    with torch.no_grad():
        lo, hi = twin.bounds(x, eps)
        margins = twin.bounds(x, eps, y)
        for _ in range(20):
            xs = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
            z = m(xs)
            assert torch.all(z >= lo - 1e-4) and torch.all(z <= hi + 1e-4)
            real = z.gather(1, y[:, None]) - z
            assert torch.all(real >= margins - 1e-4)


def test_zero_radius_gives_the_model_itself():
    m = calibrated("digits-cnn", QuantConfig())
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        z = m(x)
        lo, hi = IntervalTwin(m).bounds(x, 0.0)
        margins = IntervalTwin(m).bounds(x, 0.0, y)
    torch.testing.assert_close(lo, z, atol=1e-4, rtol=0)
    torch.testing.assert_close(hi, z, atol=1e-4, rtol=0)
    torch.testing.assert_close(margins, z[:, :1] - z, atol=1e-4, rtol=0)


def test_observers_do_not_move_while_bounds_propagate():
    m = calibrated("digits-cnn", QuantConfig())
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items() if k.endswith("in_q.scale")}
    IntervalTwin(m).bounds(torch.rand(8, 1, 8, 8), 0.3)
    after = {k: v for k, v in m.state_dict().items() if k.endswith("in_q.scale")}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.conv1.in_q.training  # modes restored


def test_batchnorm_is_refused_with_its_name():
    m = calibrated("mnist-bnn", QuantConfig(weight_bits="binary", act_bits="binary"))
    with pytest.raises(UnsupportedError, match="bn1"):
        IntervalTwin(m)


def test_schedule_warmup_then_ramp():
    cfg = digits_config("ibp", params={"warmup_epochs": 1, "ramp_epochs": 2, "natural_weight": 0.25})
    method = IBP(cfg.train, resolve_params("ibp", cfg.train.params))
    method.steps_per_epoch = 10
    assert method.schedule(5, 0.2) == (0.0, 1.0)
    eps, kappa = method.schedule(20, 0.2)
    assert eps == pytest.approx(0.1) and kappa == pytest.approx(0.625)
    assert method.schedule(30, 0.2) == (0.2, 0.25)
    assert ramp(3, 0, 0) == 1.0


@pytest.mark.parametrize("params", [{"natural_weight": 1.5}, {"ramp_epochs": -1}, {"bound": "crown-ibp"}])
def test_bad_params(params):
    with pytest.raises(ConfigError):
        resolve_params("ibp", params)


def _certified(cfg: RunConfig, eps: float) -> tuple[float, float]:
    from robustq_deploy.certify import certify
    from robustq_deploy.data import load_dataset
    from robustq_deploy.export import export_model

    model, metrics, _ = train_model(cfg, progress=False)
    ds = load_dataset("digits", "test")
    x, y = ds.as_float()[:300], ds.labels[:300]
    return certify(export_model(model, "integer", 21), x, y, eps, "linear").certified_acc, metrics["test_acc"]


@pytest.mark.slow
def test_ibp_training_makes_the_deployed_model_certifiable():
    """On digits, a few epochs of ibp certify far more of the deployed integer model than the
    same epochs of plain quantization-aware training."""
    common = {"epochs": 5, "train_limit": 1000, "attack": {"eps": 0.08, "steps": 1}}
    ibp, ibp_clean = _certified(digits_config("ibp", params={"warmup_epochs": 1, "ramp_epochs": 3}, **common), 0.05)
    qat, _ = _certified(digits_config("qat", **common), 0.05)
    assert ibp >= qat + 0.2, (ibp, qat)
    assert ibp_clean >= 0.75
