"""BinaryRelax: the eta schedule, hard quantization at the end, channel sparsity."""
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
