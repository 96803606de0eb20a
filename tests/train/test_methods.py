"""Every registered method (the registry is iterated) documents its parameters, trains one short
epoch on digits, and its checkpoint rebuilds the model; the quantized ones refuse a float model."""
import dataclasses
import math

import pytest
import torch

from robustq_deploy.errors import ConfigError
from robustq_deploy.train import method_names, read_checkpoint, resolve_params, save_checkpoint, train_model
from robustq_deploy.train.base import method_class

from .conftest import digits_config

EXPECTED = {"natural", "qat", "pgd-at", "trades", "fgsm-rs", "dq", "odgq", "lwq", "binary-relax", "ibp"}
SETUP = {  # method -> (weight bits, params) for the one-epoch run
    "lwq": (4, {"teacher_epochs": 1, "calib": 64}),
    "binary-relax": ("ternary", {}),
    "dq": (4, {"adv": "fgsm-rs"}),
}


def test_registry_has_every_method():
    assert EXPECTED <= set(method_names())


@pytest.mark.parametrize("name", method_names())
def test_method_documents_paper_equations_and_defaults(name):
    cls = method_class(name)
    doc = __import__(cls.__module__, fromlist=["_"]).__doc__
    assert doc and len(doc) > 200
    params = cls.Params
    assert dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen
    for f in dataclasses.fields(params):
        assert f.name in doc, f"{name}: parameter {f.name} not documented"


@pytest.mark.parametrize("name", method_names())
def test_one_short_epoch_and_checkpoint_round_trip(name, tmp_path):
    bits, params = SETUP.get(name, (8, {}))
    cfg = digits_config(name, bits, params=params)
    model, metrics, run_cfg = train_model(cfg, progress=False)
    assert len(metrics["history"]) == 1 and math.isfinite(metrics["history"][0]["loss"])
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert [r["layer"] for r in metrics["diagnostics"]["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, run_cfg, path, metrics)
    again, cfg2 = read_checkpoint(path)
    assert cfg2 == run_cfg
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_same_seed_same_weights():
    cfg = digits_config("odgq", 8, train_limit=128)
    a, _, _ = train_model(cfg, progress=False)
    b, _, _ = train_model(cfg, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("method,params,message", [
    ("trades", {"beta": -1.0}, "beta"),
    ("dq", {"adv": "cw"}, "unknown adversary"),
    ("odgq", {"fresh_domains": 0, "replay_domains": 0}, "at least one domain"),
    ("binary-relax", {"eta_growth": 0.5}, "eta_growth"),
    ("lwq", {"bits": [8, 3]}, "bits must list"),
    ("lwq", {"teacher_method": "lwq"}, "teacher_method"),
    ("fgsm-rs", {"alpha": 0.0}, "alpha"),
    ("pgd-at", {"nope": 1}, "unknown key 'nope'"),
])
def test_bad_params_are_one_line_config_errors(method, params, message):
    with pytest.raises(ConfigError, match=message) as exc:
        resolve_params(method, params)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("method", [m for m in method_names() if method_class(m).requires_quant])
def test_quantized_methods_refuse_a_float_model(method):
    with pytest.raises(ConfigError, match=f"train.method: '{method}' trains a quantized model, but \\[quant\\] sets "
                                          "weight_bits = 32 and act_bits = 32: float"):
        train_model(digits_config(method, 32), progress=False)


def test_bits_that_quantize_no_layer_are_refused_for_every_method():
    from dataclasses import replace

    cfg = digits_config("pgd-at", 8)
    cfg = replace(cfg, quant=replace(cfg.quant, act_bits=32))
    with pytest.raises(ConfigError, match="weight_bits = 8 and act_bits = 32, but no layer ends up quantized"):
        train_model(cfg, progress=False)


def test_dq_also_trains_a_float_model():
    """DQ's regularizer alone, without quantization (Lipschitz control of a float model)."""
    _, metrics, _ = train_model(digits_config("dq", 32, params={"beta": 1e-2}), progress=False)
    assert metrics["orthogonality"] > 0


def test_activation_only_quantization_trains_when_asked():
    from dataclasses import replace

    cfg = digits_config("natural", 32)
    cfg = replace(cfg, quant=replace(cfg.quant, act_bits=4))
    with pytest.raises(ConfigError, match="weight_bits = 32 and act_bits = 4, but no layer ends up quantized"):
        train_model(cfg, progress=False)
    model, _, _ = train_model(cfg, progress=False, act_only=True)
    assert model.fc1.in_q.bits == 4 and bool(model.fc1.in_q.observed) and not model.fc1.w_q.enabled
    assert float(model.conv1.in_q.scale) == pytest.approx(1 / 255)  # the pixel grid stays 8-bit
