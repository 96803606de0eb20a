"""BinaryRelax: the eta schedule, hard quantization at the end, channel sparsity, the trade-off
loss against adversarial training alone, and the start from a trained base."""
import pytest
import torch

from robustq_deploy.quant import quant_layers
from robustq_deploy.train import make_method, train_model

from .conftest import digits_config


def test_eta_grows_geometrically_then_goes_hard():
    method = make_method(digits_config("binary-relax", "ternary", epochs=4,
                                       params={"eta0": 0.5, "eta_growth": 3.0, "hard_epochs": 1}).train)
    assert [method.eta(e) for e in range(4)] == [0.5, 1.5, 4.5, None]


def test_trained_model_is_hard_quantized_and_reports_sparsity():
    cfg = digits_config("binary-relax", "ternary", epochs=3, train_limit=512, lr=1e-2,
                        params={"lambda_gl": 1e-3, "prune_threshold": 0.2})
    model, metrics, _ = train_model(cfg, progress=False)
    for _, layer in quant_layers(model):
        assert layer.w_q.relax_eta is None
        w, _ = layer.w_q(layer.weight)
        levels, scale = layer.w_q.levels_and_scale(layer.weight)
        assert torch.allclose(w, levels * scale.view(-1, *[1] * (w.ndim - 1)))
        assert set(levels.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert metrics["pruned_channels"] > 0  # the strong group lasso drove channels to ~0
    assert 0 < metrics["channel_sparsity"] <= 1
    assert set(metrics["channel_sparsity_per_layer"]) == {"conv1", "conv2", "fc1"}  # not the classifier
    dead = sum(int((lvl.reshape(len(lvl), -1) == 0).all(1).sum())
               for lvl in (layer.w_q.levels_and_scale(layer.weight)[0] for _, layer in quant_layers(model)[:-1]))
    assert dead >= metrics["pruned_channels"]


def test_relaxed_training_epochs_use_the_blend():
    cfg = digits_config("binary-relax", 4, epochs=3, params={"hard_epochs": 1})
    method = make_method(cfg.train)
    from robustq_deploy.models import build_model

    model = build_model("digits-cnn", cfg.quant, 10, (1, 8, 8))
    method.before_epoch(model, 0)
    assert all(layer.w_q.relax_eta == 1.0 for _, layer in quant_layers(model))
    method.before_epoch(model, 2)
    assert all(layer.w_q.relax_eta is None for _, layer in quant_layers(model))


def test_adversarial_only_loss_and_the_trade_off_loss():
    import torch.nn.functional as F

    from robustq_deploy.models import build_model
    from robustq_deploy.train.base import StepContext

    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    losses = {}
    for lam in (0.0, 1.0):
        cfg = digits_config("binary-relax", "ternary", params={"lambda_nat": lam, "lambda_gl": 0.0, "adv": "pgd"})
        torch.manual_seed(0)
        model = build_model("digits-cnn", cfg.quant, 10, (1, 8, 8)).eval()  # fixed activation scales
        method = make_method(cfg.train)
        gen = torch.Generator().manual_seed(1)
        losses[lam] = float(method.loss(model, x, y, StepContext(0, 0, 0.1, gen, torch.arange(8))).detach())
        with torch.no_grad():
            clean = float(F.cross_entropy(model(x), y))
    # PGD from the same seeded start gives the same x_adv in both runs: the trade-off adds CE(x)
    assert losses[1.0] == pytest.approx(losses[0.0] + clean, rel=1e-5)


def test_nothing_to_fit_is_refused():
    from robustq_deploy.errors import ConfigError
    from robustq_deploy.train import resolve_params

    with pytest.raises(ConfigError, match="lambda_nat and lambda_adv are both 0"):
        resolve_params("binary-relax", {"lambda_nat": 0.0, "lambda_adv": 0.0})


def test_init_starts_from_a_float_base_and_reports_zero_levels(tmp_path):
    from robustq_deploy.train import save_checkpoint

    base, bmetrics, bcfg = train_model(digits_config("natural", 32, epochs=2, lr=1e-2), progress=False)
    path = tmp_path / "base.safetensors"
    save_checkpoint(base, bcfg, path, bmetrics)
    cfg = digits_config("binary-relax", "ternary", epochs=1, lr=1e-9,
                        params={"init": str(path), "hard_epochs": 1, "lambda_gl": 0.0, "prune_threshold": 0.0})
    model, metrics, _ = train_model(cfg, progress=False)
    assert float(model.conv1.in_q.scale) == pytest.approx(1 / 255)  # the pixel grid, not the base's identity
    for (_, a), (_, b) in zip(quant_layers(model), quant_layers(base)):
        assert torch.allclose(a.weight, b.weight, atol=1e-6)  # lr ~0: still the base's weights
    assert metrics["test_acc"] >= 0.3  # ternary with the base's weights: far above chance (10 classes)
    levels = [layer.w_q.levels_and_scale(layer.weight)[0] for _, layer in quant_layers(model)[:-1]]
    zero = sum(int((lv == 0).sum()) for lv in levels) / sum(lv.numel() for lv in levels)
    assert metrics["zero_weight_fraction"] == pytest.approx(zero)
    assert metrics["zero_weight_fraction_before_pruning"] == pytest.approx(zero)  # threshold 0 prunes nothing
    assert 0 < zero < 1


def test_init_of_another_architecture_is_refused(tmp_path):
    from robustq_deploy.errors import ConfigError
    from robustq_deploy.train import save_checkpoint

    base, bmetrics, bcfg = train_model(_small_config(), progress=False)
    path = tmp_path / "base.safetensors"
    save_checkpoint(base, bcfg, path, bmetrics)
    with pytest.raises(ConfigError, match="train.params.init: .* is a 'mnist-small' model, the run trains 'digits-cnn'"):
        train_model(digits_config("binary-relax", "ternary", params={"init": str(path)}), progress=False)


def _small_config():
    from dataclasses import replace

    cfg = digits_config("natural", 32)
    return replace(cfg, model=replace(cfg.model, arch="mnist-small"))
