"""Twins of ordinary float models (tests/own_models.py: MobileNetV2-style, ResNet-style, and the
other covered ops) in every export form: onnxruntime equals the numpy reference bit for bit on
the integer forms, the QDQ graph and the twin lie within the rounding-deviation bound of the
reference, and the integer forms hold no float tensor. Observers calibrated on seeded random
images (parity needs real scales, not accuracy)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from robustq_deploy.config import QuantConfig
from robustq_deploy.export import export_model
from robustq_deploy.export.analysis import float_tensors_inside
from robustq_deploy.export.reference.deviation import argmax_may_differ, rounding_deviation
from robustq_deploy.quant.convert import quantize
from tests.own_models import Mixed, MobileNetV2Style, ResNetStyle

from .helpers import assert_bit_equal, run_ort, run_ref, run_twin

SHAPE = (1, 8, 8)
NETS = {"mobilenet": MobileNetV2Style, "resnet": ResNetStyle, "mixed": Mixed}


@pytest.fixture(scope="module")
def twins():
    out = {}
    gen = torch.Generator().manual_seed(0)
    for key, net in NETS.items():
        torch.manual_seed(0)
        twin = quantize(net(), QuantConfig(8, 8), SHAPE).train()
        with torch.no_grad():
            for _ in range(4):
                twin(torch.rand(32, *SHAPE, generator=gen))
        out[key] = twin.eval()
    x = (torch.randint(0, 256, (64, *SHAPE), generator=gen).float() / 255).numpy()
    return out, x


@pytest.mark.parametrize("fmt", ["integer", "qoperator"])
@pytest.mark.parametrize("key", list(NETS))
def test_integer_forms_bit_exact(twins, key, fmt):
    models, x = twins
    m = export_model(models[key], fmt, 21)
    onnx.checker.check_model(m, full_check=True)
    assert float_tensors_inside(m) == []
    assert_bit_equal(run_ort(m, x), run_ref(m, x))
    assert_bit_equal(run_ref(m, x, fuse=False), run_ref(m, x))  # the fused requantization is the op chain


@pytest.mark.parametrize("key", list(NETS))
def test_qdq_and_twin_within_the_rounding_bound(twins, key):
    models, x = twins
    m = export_model(models[key], "qdq", 21)
    ref = run_ref(m, x)
    (bound,) = rounding_deviation(m, {"input": x}).values()
    for got in (run_ort(m, x), run_twin(models[key], x)):
        assert np.all(np.abs(got.astype(np.float64) - ref) <= bound)
    # the integer form is a rounding of the same real values: argmax agrees wherever no near-tie can move it
    integer = run_ref(export_model(models[key], "integer", 21), x)
    settled = ~argmax_may_differ(ref, bound)
    assert np.array_equal(integer.argmax(1)[settled], ref.argmax(1)[settled])


def test_depthwise_and_conv_bn_fold_into_grouped_integer_convs(twins):
    models, _ = twins
    m = export_model(models["mobilenet"], "integer", 21)
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in m.graph.node if n.op_type == "ConvInteger"]
    assert sorted(set(groups))[0] == 1 and max(groups) > 1
    ops = {n.op_type for n in m.graph.node}
    assert "BatchNormalization" not in ops and "ReduceSum" in ops


def test_relu6_is_a_requantization_clamp(twins):
    """ReLU6 folds into the clamp of the consumer's requantization: qmax = round(6 / scale) when
    the grid reaches beyond 6 (an observer that saw only values below 6 never does)."""
    from robustq_deploy.export.requant import match_requantize
    from robustq_deploy.quant import QConv2d

    models, _ = twins
    twin = models["mobilenet"]
    layer = dict(twin.named_modules())["features.1.conv.3"]  # depthwise conv after a ReLU6
    assert isinstance(layer, QConv2d) and not layer.in_q.signed
    s = float(layer.in_q.scale)
    layer.in_q.scale.fill_(12.0 / 255)  # a grid reaching 12: the clamp at 6 must show
    try:
        m = export_model(twin, "integer", 21)
    finally:
        layer.in_q.scale.fill_(s)
    chain = next(c for c in match_requantize(m.graph) if c.output.startswith("features_1_conv_3_rq"))
    assert (chain.qmin, chain.qmax) == (0, int(np.rint(np.float32(6.0) / np.float32(12.0 / 255))))


def test_reference_average_pool_matches_onnxruntime():
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 7, 6), dtype=np.float32)
    for pads, include in (([0, 0, 0, 0], 1), ([1, 1, 1, 1], 1), ([1, 0, 1, 0], 0)):
        node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 1], pads=pads,
                                count_include_pad=include)
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        np.testing.assert_allclose(run_ref(m, x), run_ort(m, x), rtol=1e-6, atol=1e-7)
