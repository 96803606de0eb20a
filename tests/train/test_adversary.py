"""Training adversaries: PGD matches the evaluation attack; points stay in the ball and the box."""
import torch

from robustq_deploy.attacks import ThreatModel, pgd
from robustq_deploy.config import QuantConfig, replace
from robustq_deploy.models import build_model
from robustq_deploy.train.adversary import fgsm_rs, pgd_train, project

from .conftest import digits_config


def _model_and_batch():
    torch.manual_seed(0)
    model = build_model("digits-cnn", QuantConfig(), 10, (1, 8, 8)).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def test_pgd_train_equals_the_evaluation_pgd():
    model, x, y = _model_and_batch()
    cfg = replace(digits_config("pgd-at").train, **{"attack.steps": 5})
    mine = pgd_train(model, x, y, cfg, 0.1, torch.Generator().manual_seed(7))
    theirs = pgd(model, x, y, ThreatModel("linf", 0.1), steps=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(mine, theirs)


def test_fgsm_rs_stays_in_the_ball_and_the_box_and_keeps_the_mode():
    model, x, y = _model_and_batch()
    model.train()
    x_adv = fgsm_rs(model, x, y, 0.1, 0.125, torch.Generator().manual_seed(0))
    assert model.training
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert not torch.equal(x_adv, x)


def test_project_with_per_example_radius():
    x = torch.full((2, 1, 1, 2), 0.5)
    far = torch.tensor([[[[0.9, 0.0]]], [[[0.9, 0.0]]]])
    eps = torch.tensor([0.1, 0.3]).view(2, 1, 1, 1)
    assert torch.allclose(project(far, x, eps), torch.tensor([[[[0.6, 0.4]]], [[[0.8, 0.2]]]]))
