"""Diagnostics: operator norms against dense Jacobians, error amplification by hand, the plot."""
import pytest
import torch
from torch.func import jacrev

from robustq_deploy.config import QuantConfig
from robustq_deploy.models import build_model
from robustq_deploy.quant import QConv2d, QLinear, FLOAT_SPEC
from robustq_deploy.quant.spec import LayerSpec
from robustq_deploy.train.diagnostics import diagnose, error_amplification, layer_lipschitz, operator_norm, plot_diagnostics


@pytest.mark.parametrize("stride,padding,size", [(1, 1, 6), (2, 1, 7), (2, 0, 8)])
def test_conv_operator_norm_matches_the_dense_jacobian(stride, padding, size):
    torch.manual_seed(0)
    conv = QConv2d(3, 4, 3, FLOAT_SPEC, stride=stride, padding=padding, bias=False)
    x = torch.zeros(1, 3, size, size)
    jac = jacrev(lambda v: conv(v).flatten())(x).reshape(-1, x.numel())
    exact = torch.linalg.matrix_norm(jac, ord=2).item()
    assert operator_norm(conv, (3, size, size), iters=200) == pytest.approx(exact, rel=1e-3)


def test_linear_operator_norm_and_quantized_weights():
    torch.manual_seed(0)
    lin = QLinear(6, 4, LayerSpec(4, 8))
    assert operator_norm(lin, (6,), iters=200) == pytest.approx(torch.linalg.matrix_norm(lin.weight.detach(), ord=2).item(), rel=1e-4)
    levels, scale = lin.w_q.levels_and_scale(lin.weight)
    wq = levels * scale[:, None]
    model = torch.nn.Sequential(lin)
    rec = layer_lipschitz(model, torch.rand(2, 6), quantized=True)
    assert rec[0]["layer"] == "0"
    assert rec[0]["lipschitz"] == pytest.approx(torch.linalg.matrix_norm(wq, ord=2).item(), rel=1e-3)


def test_error_amplification_of_a_linear_layer_by_hand():
    lin = QLinear(2, 2, FLOAT_SPEC)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))
        lin.bias.fill_(1.0)
    x = torch.full((2, 2), 0.5)
    delta = torch.tensor([[0.1, 0.0], [0.0, 0.1]])
    # first point: ||(0.2, 0)|| / 0.1 = 2; second: ||(0, 0.05)|| / 0.1 = 0.5; mean 1.25
    (rec,) = error_amplification(torch.nn.Sequential(lin), x, delta)
    assert rec["ratio"] == pytest.approx(1.25)


def test_diagnose_and_plot(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    records = {}
    for label, q in (("float", QuantConfig(weight_bits=32, act_bits=32)), ("int4", QuantConfig(weight_bits=4, act_bits=4))):
        model = build_model("digits-cnn", q, 10, (1, 8, 8))
        records[label] = diagnose(model, x, y, 0.1)
        assert [r["layer"] for r in records[label]["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
        assert all(r["ratio"] >= 0 and r["lipschitz"] > 0 for r in records[label]["layers"])
    png = plot_diagnostics(records, tmp_path / "amp.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
