"""quantize(): an ordinary float model becomes the quantized twin by graph transformation; the scan
refuses everything it cannot convert in one error, before anything is changed."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustq_deploy
from robustq_deploy.config import LayerQuantConfig, QuantConfig
from robustq_deploy.errors import ConfigError, UnsupportedError
from robustq_deploy.quant import LayerSpec, QAdd, QAvgPool2d, QConcat, QConv2d, QConvBn2d, QLinear, quant_layers
from robustq_deploy.quant.convert import quantize, quantized_names, scan
from tests.own_models import Mixed, MobileNetV2Style, ResNetStyle, Unsupported

SHAPE = (1, 8, 8)
FLOAT = QuantConfig(32, 32)


def _twin(model: nn.Module, quant: QuantConfig = QuantConfig(), shape=SHAPE) -> nn.Module:
    torch.manual_seed(0)
    return quantize(model, quant, shape)


def _calibrate(twin: nn.Module, shape=SHAPE, batches: int = 3) -> None:
    gen = torch.Generator().manual_seed(0)
    twin.train()
    with torch.no_grad():
        for _ in range(batches):
            twin(torch.rand(16, *shape, generator=gen))
    twin.eval()


def test_mobilenet_v2_structure():
    torch.manual_seed(0)
    twin = quantize(MobileNetV2Style(), QuantConfig(), SHAPE)
    mods = dict(twin.named_modules())
    convs = [n for n, m in mods.items() if isinstance(m, QConvBn2d)]
    assert len(convs) == 1 + 2 + 4 * 3 + 1  # stem, 5 blocks (the first without expansion), head
    assert all(n.endswith(".bn") for n, m in mods.items() if isinstance(m, nn.BatchNorm2d))  # folded into convs
    depthwise = [n for n in convs if mods[n].groups > 1]
    assert depthwise and all(mods[n].groups == mods[n].in_channels == mods[n].out_channels for n in depthwise)
    # residual adds are named after the block that makes them; pooling and the head keep their names
    assert [n for n, m in mods.items() if isinstance(m, QAdd)] == ["features.0.add", "features.2.add", "features.4.add"]
    assert isinstance(mods["pool"], QAvgPool2d) and mods["pool"].is_global
    assert isinstance(mods["classifier.1"], QLinear) and "classifier.0" not in mods  # dropout removed
    # the first layer reads the uint8 pixel grid; inputs after ReLU6 are unsigned, block outputs signed
    stem = mods["stem.0"]
    assert stem.in_q.fixed and stem.in_q.scale.item() == pytest.approx(1 / 255) and not stem.in_q.signed
    assert not mods["features.1.conv.3"].in_q.signed  # after ReLU6
    assert mods["features.2.conv.0"].in_q.signed and mods["features.2.add"].in_q.signed
    assert not mods["pool"].in_q.signed and not mods["classifier.1"].in_q.signed
    # ReLU6 became a clamp the exporters fold; nothing else is left
    fns = [n.target for n in twin.graph.nodes if n.op == "call_function"]
    assert set(fns) == {F.hardtanh, torch.flatten} and twin.num_classes == 10 and twin.input_shape == SHAPE


def test_resnet_structure():
    twin = _twin(ResNetStyle())
    mods = dict(twin.named_modules())
    assert [n for n, m in mods.items() if isinstance(m, QAdd)] == [
        "layer1.0.add", "layer1.1.add", "layer2.0.add", "layer2.1.add", "layer3.add"]
    short = mods["layer2.0.shortcut.0"]
    assert isinstance(short, QConvBn2d) and short.kernel_size == (1, 1) and short.stride == (2, 2)
    assert len(quant_layers(twin)) == 1 + 2 * 2 + (2 * 2 + 1) + 3 + 1


@pytest.mark.parametrize("net", [MobileNetV2Style, ResNetStyle, Mixed])
def test_float_spec_reproduces_the_float_model(net):
    torch.manual_seed(0)
    model = net()
    if hasattr(model, "classifier"):
        model.classifier[0].p = 0.0  # dropout is removed from the twin
    twin = quantize(model, FLOAT, SHAPE)
    x = torch.rand(8, *SHAPE)
    model.train(), twin.train()
    assert torch.allclose(model(x), twin(x), atol=1e-5)  # batch statistics, running stats updated alike
    model.eval(), twin.eval()
    assert torch.allclose(model(x), twin(x), atol=1e-5)  # running statistics, BatchNorm folded
    convbn = [m for m in twin.modules() if isinstance(m, QConvBn2d)]
    assert all(m.bn.num_batches_tracked.item() == 1 for m in convbn) and (net is Mixed or convbn)


def test_the_float_model_is_left_unchanged():
    model = ResNetStyle()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _calibrate(quantize(model, QuantConfig(), SHAPE))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.conv1, nn.Conv2d) and not isinstance(model.conv1, QConv2d)


def test_conv_bn_trains_with_the_folded_weight_and_exports_it():
    conv = QConvBn2d(2, 3, 3, LayerSpec(8, 8), padding=1, bias=False)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bn.running_mean.uniform_(-1, 1)
        conv.bn.running_var.uniform_(0.5, 2)
        conv.bn.weight.uniform_(-2, 2)
        conv.bn.bias.uniform_(-1, 1)
    x = torch.rand(4, 2, 5, 5)
    conv.train()
    conv(x)  # observe the input grid (and move the running statistics)
    conv.eval()
    sigma = torch.sqrt(conv.bn.running_var + conv.bn.eps)
    factor = conv.bn.weight / sigma
    w, b = conv.weight_and_bias()
    assert torch.allclose(w, conv.weight * factor[:, None, None, None])
    assert torch.allclose(b, conv.bn.bias - conv.bn.running_mean * factor)
    p = conv.integer_params()
    wq, scale = conv.w_q(w)
    assert torch.equal(torch.from_numpy(p["weight"]).float() * scale[:, None, None, None], wq.detach())
    assert p["bias"] is not None and p["bias"].dtype.name == "int32"
    # eval: one convolution with the folded, quantized weight and bias
    xq = conv.in_q(x)
    bq = torch.from_numpy(p["bias"]).float() * torch.from_numpy(p["bias_scale"])
    assert torch.allclose(conv(x), F.conv2d(xq, wq, bq, padding=1), atol=1e-5)
    # training: batch statistics, and the running ones move
    conv.train()
    before = conv.bn.running_mean.clone()
    y = conv(x)
    assert torch.allclose(y.mean((0, 2, 3)), conv.bn.bias.detach(), atol=1e-4)
    assert not torch.equal(before, conv.bn.running_mean)


def test_per_layer_spec_addresses_module_names():
    quant = QuantConfig(8, 8, layers={"features.1.conv.3": LayerQuantConfig(weight_bits=4),
                                      "features.2.add": LayerQuantConfig(act_bits=4),
                                      "classifier.1": LayerQuantConfig(weight_bits="ternary")})
    mods = dict(_twin(MobileNetV2Style(), quant).named_modules())
    assert mods["features.1.conv.3"].w_q.bits == 4 and mods["features.1.conv.0"].w_q.bits == 8
    assert mods["features.2.add"].in_q.bits == 4 and mods["classifier.1"].w_q.bits == "ternary"
    assert "features.2.add" in quantized_names(_twin(MobileNetV2Style()))


def test_per_tensor_granularity_and_lsq():
    twin = _twin(ResNetStyle(), QuantConfig(8, 8, granularity="per_tensor", scale_mode="lsq"))
    conv = dict(twin.named_modules())["layer1.0.conv1"]
    assert not conv.w_q.per_channel and conv.w_q.learned and conv.w_q.step.ndim == 0


def test_unknown_layer_names_are_refused():
    with pytest.raises(ConfigError, match=r"quant.layers: no quantized layer named 'nope'.*layer1.0.conv1"):
        _twin(ResNetStyle(), QuantConfig(layers={"nope": LayerQuantConfig(weight_bits=4)}))


def test_scan_names_every_unsupported_module_at_once():
    problems = scan(Unsupported(), SHAPE)
    text = "; ".join(problems)
    for part in ("act (GELU)", "rnn (LSTM)", "custom autograd function Doubler.apply", "Tensor.transpose"):
        assert part in text
    with pytest.raises(UnsupportedError) as exc:
        quantize(Unsupported(), QuantConfig(), SHAPE)
    msg = str(exc.value)
    assert "\n" not in msg and "act (GELU)" in msg and "rnn (LSTM)" in msg and "Doubler.apply" in msg


class _Patterns(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.bn1d = nn.BatchNorm1d(256)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y  # the conv output is read twice: BatchNorm cannot fold
        z = torch.sigmoid(z)
        return self.fc(self.bn1d(z.reshape(x.size(0), -1)))


def test_scan_refuses_patterns_with_module_names():
    text = "; ".join(scan(_Patterns(), SHAPE))
    assert "bn (BatchNorm2d): BatchNorm2d must directly follow a Conv2d" in text
    assert "(model): torch.sigmoid: not supported" in text and "bn1d (BatchNorm1d): not supported" in text


def test_untraceable_model_is_one_line():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(_Branch())

        def forward(self, x):
            return self.inner(x)

    with pytest.raises(UnsupportedError, match=r"torch.fx cannot trace it in inner.0 .*control flow"):
        quantize(Branchy(), QuantConfig(), SHAPE)


class _Branch(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_model_that_does_not_fit_the_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"does not run on inputs of shape \[N, 3, 8, 8\]"):
        quantize(ResNetStyle(in_channels=1), QuantConfig(), (3, 8, 8))


def test_mixed_ops_and_signedness():
    twin = _twin(Mixed())
    mods = dict(twin.named_modules())
    cat = mods["cat"]
    assert isinstance(cat, QConcat) and cat.in_q.signed  # hardtanh(-1, 1) may be negative
    assert isinstance(mods["pool"], QAvgPool2d) and not mods["pool"].is_global and not mods["pool"].in_q.signed
    assert isinstance(mods["avgpool"], QAvgPool2d) and mods["avgpool"].padding == (1, 1)
    assert mods["same"].padding == (1, 1) and mods["dilated"].dilation == (2, 2) and mods["grouped"].groups == 4
    bounds = sorted(tuple(n.args[1:3]) for n in twin.graph.nodes if n.target is F.hardtanh)
    assert bounds == [(-1.0, 1.0), (0.0, 2.0), (0.0, 6.0)]


def test_library_entry_point_and_default_spec():
    twin = robustq_deploy.quantize(ResNetStyle(), input_shape=SHAPE)
    assert all(layer.quantized and layer.w_q.bits == 8 for _, layer in quant_layers(twin))
    assert twin.arch == "ResNetStyle" and not math.isnan(twin(torch.rand(2, *SHAPE)).sum().item())
