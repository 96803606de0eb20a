"""The shared loop: eps warm-up, devices, the train stage's checkpoint and manifest, config checks."""
import pytest
import torch

from robustq_deploy.config import replace
from robustq_deploy.validation import validate
from robustq_deploy.errors import ConfigError
from robustq_deploy.manifest import Manifest
from robustq_deploy.train import checkpoint_metrics, load_checkpoint, train_stage
from robustq_deploy.train.loop import epoch_eps, resolve_device

from .conftest import digits_config


def test_eps_warm_up():
    cfg = replace(digits_config("pgd-at").train, eps_warmup_epochs=4)
    assert [epoch_eps(cfg, e) for e in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert epoch_eps(replace(cfg, eps_warmup_epochs=0), 0) == pytest.approx(0.1)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            resolve_device("cuda")


def test_train_stage_records_metrics_and_diagnostics(tmp_path):
    art = train_stage(digits_config("binary-relax", "ternary"), tmp_path, progress=False)
    assert art.kind == "checkpoint" and Manifest.load(tmp_path).find(art.file) is not None
    assert "channel_sparsity" in art.meta and "diagnostics" in art.meta
    stored = checkpoint_metrics(art.file)
    assert stored["channel_sparsity"] == art.meta["channel_sparsity"]
    assert "train_seconds" not in stored  # timings stay out of the checkpoint bytes
    model, cfg, _ = load_checkpoint(art.file)
    assert cfg.train.method == "binary-relax"


@pytest.mark.parametrize("change,message", [
    ({"quant.scale_mode": "mse"}, "quant.scale_mode"),
    ({"train.device": "tpu"}, "train.device"),
])
def test_new_config_fields_are_validated(change, message):
    with pytest.raises(ConfigError, match=message):
        validate(replace(digits_config("natural"), **change))


def test_weight_clip_range_is_validated():
    from robustq_deploy.config import LayerQuantConfig

    cfg = digits_config("natural")
    bad = replace(cfg, quant=replace(cfg.quant, layers={"fc1": LayerQuantConfig(weight_clip=1.5)}))
    with pytest.raises(ConfigError, match="weight_clip"):
        validate(bad)


def test_weight_average_by_hand():
    from robustq_deploy.train.loop import WeightAverage

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # d_1 = min(0.2, 2/11) = 2/11
    first = (2 / 11) * 0.0 + (9 / 11) * 1.0
    assert float(ema.avg[0]) == pytest.approx(first)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update()  # d_2 = min(0.2, 3/12) = 0.2
    second = 0.2 * first + 0.8 * 2.0
    assert float(ema.avg[0]) == pytest.approx(second)
    with ema.swapped():
        assert model.weight.item() == pytest.approx(second)
    assert model.weight.item() == 2.0  # the live weights come back
    ema.copy_to()
    assert model.weight.item() == pytest.approx(second)


def test_fit_with_weight_average_returns_the_average():
    from robustq_deploy.train import train_model
    from robustq_deploy.checkpoint import load_split
    from robustq_deploy.train.loop import accuracy

    cfg = digits_config("qat", epochs=2, ema_decay=0.9)
    model, metrics, _ = train_model(cfg, progress=False)
    tx, ty, _ = load_split(cfg, "test")
    # the last epoch's test accuracy was taken with the averaged weights, which the model now holds
    assert metrics["history"][-1]["test_acc"] == accuracy(model, tx, ty) == metrics["test_acc"]
    plain, _, _ = train_model(replace(cfg, train=replace(cfg.train, ema_decay=0.0)), progress=False)
    assert not torch.equal(model.state_dict()["fc2.weight"], plain.state_dict()["fc2.weight"])


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_ema_decay_is_validated(decay):
    with pytest.raises(ConfigError, match="train.ema_decay"):
        validate(replace(digits_config("natural"), **{"train.ema_decay": decay}))
