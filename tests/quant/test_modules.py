"""Quantizer modules: default behaviour, clipping, LSQ steps, relaxation, every bit width trains,
mixed precision per layer."""
import pytest
import torch
import torch.nn.functional as F

from robustq_deploy.config import LayerQuantConfig, QuantConfig
from robustq_deploy.models import build_model
from robustq_deploy.quant import ActQuantizer, QLinear, WeightQuantizer, layer_spec, quant_layers
from robustq_deploy.quant import primitives as P
from robustq_deploy.quant.spec import LayerSpec


def w22():
    return torch.tensor([[1.1, -2.0], [0.55, 0.26]])


def test_weight_quantizer_default_is_min_max_per_channel():
    wq = WeightQuantizer(4)
    levels, scale = wq.levels_and_scale(w22())
    # scales 2/7 and 0.55/7: [1.1, -2] / (2/7) = [3.85, -7] -> [4, -7]; [0.55, 0.26] / (0.55/7) = [7, 3.31] -> [7, 3]
    assert torch.allclose(scale, torch.tensor([2 / 7, 0.55 / 7]))
    assert levels.tolist() == [[4, -7], [7, 3]]
    out, s = wq(w22())
    assert torch.allclose(out, levels * scale[:, None])
    assert not hasattr(wq, "step") and wq.clip is None and wq.relax_eta is None


def test_weight_clip_saturates_the_largest_weights():
    levels, scale = WeightQuantizer(4, per_channel=False, clip=0.5).levels_and_scale(w22())
    # range 0.5 * 2 = 1 -> scale 1/7; 1.1 -> 7.7 and -2 -> -14 saturate at +-7, 0.55 -> 3.85 -> 4, 0.26 -> 1.82 -> 2
    assert scale.item() == pytest.approx(1 / 7)
    assert levels.tolist() == [[7, -7], [4, 2]]


def test_learned_weight_step_is_a_parameter_with_lsq_init_and_gradient():
    wq = WeightQuantizer(4, per_channel=True, learned=True, channels=2)
    wq.init_step(w22())
    # 2 * mean|W_c| / sqrt(7)
    assert torch.allclose(wq.step.data, torch.tensor([2 * 1.55, 2 * 0.405]) / 7 ** 0.5)
    w = w22().requires_grad_(True)
    out, scale = wq(w)
    out.sum().backward()
    assert wq.step.grad is not None and wq.step.grad.abs().sum() > 0
    levels, s = wq.levels_and_scale(w22())
    assert torch.allclose(s, wq.step.data) and torch.allclose(out.detach(), levels * s[:, None])
    assert "w_q.step" in dict(QLinear(2, 2, LayerSpec(4, 8, learned_step=True)).named_parameters())


def test_learned_activation_scale_initialises_on_the_first_training_batch():
    aq = ActQuantizer(4, learned=True)
    assert isinstance(aq.scale, torch.nn.Parameter)
    x = torch.tensor([[0.3, 1.2, 0.0, 2.5]])
    aq.train()
    y = aq(x)
    # 2 * mean|x| / sqrt(15) = 2 * 1.0 / 3.873
    s0 = 2 * 1.0 / 15 ** 0.5
    assert aq.scale.item() == pytest.approx(s0, rel=1e-6)
    assert torch.allclose(y, torch.clamp(torch.round(x / s0), 0, 15) * s0)
    y.sum().backward()
    assert aq.scale.grad is not None
    assert aq.qparams()["scale"] == pytest.approx(s0, rel=1e-6)
    aq.eval()
    aq(x * 10)
    assert aq.scale.item() == pytest.approx(s0, rel=1e-6)  # eval never moves it


def test_exported_activation_scale_is_the_step_the_forward_pass_uses():
    aq = ActQuantizer(8, learned=True)
    with torch.no_grad():
        aq.scale.fill_(-0.05)  # gradient steps may push a learned step negative
        aq.observed.fill_(True)
    aq.eval()
    x = torch.tensor([[0.0, 0.51, 1.0]])
    assert aq.qparams()["scale"] == pytest.approx(0.05)
    assert torch.allclose(aq(x), torch.clamp(torch.round(x / 0.05), 0, 255) * 0.05)


def test_fixed_input_grid_is_never_learned():
    aq = ActQuantizer(8, fixed_scale=1 / 255, learned=True)
    assert not aq.learned and aq.scale.item() == pytest.approx(1 / 255)


def test_relaxation_blends_and_none_is_hard():
    wq = WeightQuantizer("ternary", per_channel=False)
    w = torch.tensor([0.1, -0.9, 0.5, -0.2])
    hard, _ = wq(w)
    assert torch.allclose(hard, torch.tensor([0.0, -0.7, 0.7, 0.0]))
    wq.relax_eta = 1.0
    soft, _ = wq(w)
    assert torch.allclose(soft, (hard + w) / 2)
    wq.relax_eta = None
    assert torch.equal(wq(w)[0], hard)


@pytest.fixture(scope="module")
def digits_batch():
    from robustq_deploy.data import load_dataset

    ds = load_dataset("digits", "train").take(128)
    return torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels.astype("int64"))


@pytest.mark.parametrize("weight_bits,act_bits,arch", [
    (8, 8, "digits-cnn"), (4, 8, "digits-cnn"), (2, 8, "digits-cnn"), ("ternary", 8, "digits-cnn"),
    ("binary", 8, "digits-cnn"), (8, 4, "digits-cnn"), (8, 2, "digits-cnn"), ("ternary", 4, "digits-cnn"),
    # sign activations need the BatchNorm in front of them (after a ReLU every sign is +1)
    ("binary", "binary", "mnist-bnn"), (8, "binary", "mnist-bnn"),
])
def test_every_bit_width_trains(digits_batch, weight_bits, act_bits, arch):
    """20 Adam steps on a fixed digits batch lower the loss at every weight / activation width."""
    x, y = digits_batch
    torch.manual_seed(0)
    model = build_model(arch, QuantConfig(weight_bits=weight_bits, act_bits=act_bits), 10, (1, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert min(losses[-5:]) < 0.8 * losses[0], losses


def test_mixed_precision_per_layer_and_lsq_mode():
    q = QuantConfig(weight_bits=4, act_bits=8, scale_mode="lsq",
                    layers={"fc1": LayerQuantConfig(weight_bits="ternary"),
                            "conv2": LayerQuantConfig(weight_bits=8, act_bits=4, weight_clip=0.8)})
    assert layer_spec(q, "conv2") == LayerSpec(8, 4, True, 0.8, True)
    model = build_model("digits-cnn", q, 10, (1, 8, 8))
    layers = dict(quant_layers(model))
    assert layers["conv1"].w_q.bits == 4 and layers["conv1"].w_q.learned
    assert layers["conv1"].in_q.bits == 8 and not layers["conv1"].in_q.learned  # pixel grid stays fixed
    assert layers["conv2"].w_q.clip == 0.8 and layers["conv2"].in_q.bits == 4 and layers["conv2"].in_q.learned
    assert layers["fc1"].w_q.bits == "ternary" and not layers["fc1"].w_q.learned  # ternary has its own scale
    levels = layers["fc1"].integer_params()["weight"]
    assert set(levels.ravel().tolist()) <= {-1, 0, 1}


def test_default_config_builds_the_plain_quantizers():
    model = build_model("digits-cnn", QuantConfig(), 10, (1, 8, 8))
    for _, layer in quant_layers(model):
        assert not layer.w_q.learned and layer.w_q.clip is None and not layer.in_q.learned
    names = set(model.state_dict())
    assert not any(n.endswith("w_q.step") for n in names)


def test_clip_and_lsq_survive_integer_params():
    layer = QLinear(2, 2, LayerSpec(4, 8, weight_clip=0.5))
    with torch.no_grad():
        layer.weight.copy_(w22())
    layer.eval()
    ip = layer.integer_params()
    # ranges 0.5 * [2, 0.55]: [1.1, -2] * 7 saturates; [0.55, 0.26] / (0.275 / 7) = [14, 6.6] -> [7, 7]
    assert ip["weight"].tolist() == [[7, -7], [7, 7]]
    assert ip["weight_scale"] == pytest.approx([1 / 7, 0.275 / 7])
    assert torch.allclose(P.symmetric_scale(w22(), 4, True, 0.5), torch.from_numpy(ip["weight_scale"]))


@pytest.mark.parametrize("kernel, stride, padding, dilation", [(4, 2, 1, 1), (3, 1, 1, 1), (5, 2, 2, 1), (3, 1, 2, 2), (3, 2, 0, 1)])
@pytest.mark.parametrize("bits", [32, 8])
def test_one_channel_conv_input_gradient_matches_autograd(kernel, stride, padding, dilation, bits):
    """The first layer of a grayscale model computes its input gradient by matmul and fold;
    values and all three gradients agree with stock autograd of the same conv."""
    from robustq_deploy.quant import QConv2d
    torch.manual_seed(0)
    conv = QConv2d(1, 6, kernel, LayerSpec(bits, bits), stride=stride, padding=padding)
    conv.dilation = (dilation, dilation)
    x = torch.rand(5, 1, 17, 19, requires_grad=True)
    y = conv(x)
    assert type(y.grad_fn).__name__ == "_SingleChannelConv2dBackward"
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    xq, w, b = conv.quant_inputs(x)
    ref_y = F.conv2d(xq, w, b, conv.stride, conv.padding, conv.dilation)
    ref = torch.autograd.grad(ref_y, (x, conv.weight, conv.bias), g)
    assert torch.equal(y, ref_y)
    assert torch.allclose(ours[0], ref[0], rtol=1e-5, atol=1e-5)  # the same sum in another order
    assert torch.equal(ours[1], ref[1]) and torch.equal(ours[2], ref[2])  # PyTorch's own kernel


def test_one_channel_conv_without_input_gradient_takes_the_stock_path():
    from robustq_deploy.quant import QConv2d
    conv = QConv2d(1, 4, 3, LayerSpec(8, 8), padding=1)
    assert type(conv(torch.rand(2, 1, 8, 8)).grad_fn).__name__ == "ConvolutionBackward0"
