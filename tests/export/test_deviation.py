"""The rounding-deviation bound (robustq_deploy.export.reference.deviation) on hand-computed cases:
a level of deviation only where the reference's value is a near-tie, propagated through the
absolute weights, and a rounding that is wrong away from ties falls outside it."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.export.reference.deviation import argmax_may_differ, rounding_deviation

S_IN, S_W = 0.5, 0.25


def _graph(w: np.ndarray) -> onnx.ModelProto:
    """input -> Q(uint8, S_IN) -> DQ -> Conv(DQ(int8 w, S_W), 1x1 channels) -> out."""
    inits = [numpy_helper.from_array(np.array(S_IN, np.float32), "s_in"),
             numpy_helper.from_array(np.array(0, np.uint8), "z_in"),
             numpy_helper.from_array(w.astype(np.int8), "wq"),
             numpy_helper.from_array(np.array(S_W, np.float32), "s_w"),
             numpy_helper.from_array(np.array(0, np.int8), "z_w")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s_in", "z_in"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s_in", "z_in"], ["dq"]),
             helper.make_node("DequantizeLinear", ["wq", "s_w", "z_w"], ["w"]),
             helper.make_node("Conv", ["dq", "w"], ["out"], kernel_shape=list(w.shape[2:]))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 1, 3])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def test_one_level_only_at_a_tie_then_through_the_weights():
    x = np.array([[[[1.25, 1.0, 1.2]]]], np.float32)  # x / S_IN = 2.5 (a tie), 2.0, 2.4 (far from a tie)
    w = np.array([[[[3]]], [[[-2]]]])  # two output channels, 1x1 kernel
    (bound,) = rounding_deviation(_graph(w), {"input": x}).values()
    assert bound.shape == (1, 2, 1, 3)
    # the tie may round to 2 or 3: one level of S_IN, times |w| * S_W in each channel
    np.testing.assert_allclose(bound[0, :, 0, 0], [S_IN * 3 * S_W, S_IN * 2 * S_W], rtol=1e-4)
    # away from ties only float rounding of the last op remains
    assert np.all(bound[0, :, 0, 1:] < 1e-5)


def test_a_wrong_rounding_falls_outside_the_bound():
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 200, (1, 1, 1, 3)) + rng.uniform(0.1, 0.4, (1, 1, 1, 3))).astype(np.float32) * S_IN
    model = _graph(np.array([[[[1]]]]))
    (bound,) = rounding_deviation(model, {"input": x}).values()
    (ref,) = ReferenceSession(model).run(None, {"input": x})
    truncating_engine = np.ceil(x / S_IN) * S_IN * S_W  # rounds up where the reference rounds down
    assert np.all(np.abs(truncating_engine - ref) > bound)


def test_argmax_may_differ_only_within_the_bound():
    logits = np.array([[1.0, 0.9, 0.0], [1.0, 0.5, 0.0]])
    bound = np.full_like(logits, 0.1)
    assert argmax_may_differ(logits, bound).tolist() == [True, False]
