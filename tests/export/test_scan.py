"""The pre-export scan: one error that lists every unsupported module and opset, before anything
is written; the CLI turns it into one line and exit code 2."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robustq_deploy.errors import ConfigError, UnsupportedError
from robustq_deploy.export import export_model, export_formats
from robustq_deploy.quant import LayerSpec, QConv2d, QLinear

from ..helpers import run_cli


class Odd(nn.Module):
    """A quantized conv, then modules no integer handler covers, and a float linear layer."""

    input_shape = (1, 8, 8)
    arch = "odd"

    def __init__(self):
        super().__init__()
        self.conv = QConv2d(1, 4, 3, LayerSpec(8, 8), padding=1, in_fixed_scale=1 / 255)
        self.act = nn.Sigmoid()
        self.pool = nn.AvgPool2d(2)
        self.fc = QLinear(64, 10, LayerSpec(32, 32))

    def forward(self, x):
        x = self.pool(self.act(self.conv(x)))
        return self.fc(torch.tanh(torch.flatten(x, 1)))


def test_every_problem_in_one_error():
    with pytest.raises(UnsupportedError) as exc:
        export_model(Odd(), "integer", 21)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("cannot export as integer (opset 21): ")
    for part in ("act (Sigmoid): no integer handler", "pool (AvgPool2d): no integer handler",
                 "tanh: no integer handler", "fc: float layer"):
        assert part in msg


def test_unsupported_opsets_are_listed(models):
    with pytest.raises(UnsupportedError) as exc:
        export_model(models["bnn"], "packed", 17)
    msg = str(exc.value)
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        assert f"{layer} (QConv2d)" in msg or f"{layer} (QLinear)" in msg
    assert "packed handler supports opsets 18-23, not 17" in msg
    with pytest.raises(UnsupportedError, match="integer handler supports opsets 14-23, not 13"):
        export_model(models["int8"], "integer", 13)


def test_form_specific_refusals(models):
    with pytest.raises(UnsupportedError, match="bn1 \\(BatchNorm2d\\): no qdq handler.*conv2: binary activations"):
        export_model(models["bnn"], "qdq", 21)
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_model(models["int8"], "tflite", 21)
    assert export_formats() == ["integer", "packed", "qdq", "qoperator"]


class BnIntoInt8(nn.Module):
    """BatchNorm feeding an 8-bit layer (not a sign): no integer threshold form."""

    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = QConv2d(1, 4, 3, LayerSpec(8, 8), in_fixed_scale=1 / 255)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = QConv2d(4, 4, 3, LayerSpec(8, 8), in_signed=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(self.conv2(self.bn(self.conv1(x))))


def test_batchnorm_and_output_rules():
    with pytest.raises(UnsupportedError) as exc:
        export_model(BnIntoInt8(), "integer", 21)
    assert "bn: BatchNorm must feed binary activations" in str(exc.value)
    assert "max pooling right before the output" in str(exc.value)


def test_cli_exit_code_and_nothing_written(checkpoints, tmp_path, capsys):
    code, out, err = run_cli(["export", checkpoints["bnn"], "--format", "packed", "--opset", "17",
                              "--out", tmp_path], capsys)
    assert code == 2 and err.startswith("error: cannot export as packed (opset 17)") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
