"""Hand-built QDQ graphs for the rewrite tests (seeded, small)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_qdq(seed: int = 0, relu: bool = True, pool: bool = True, bias_scale_factor: float = 1.0,
             channels: int = 8) -> onnx.ModelProto:
    """input -> Q/DQ (uint8) -> Conv(DQ int8 per-channel weights, DQ int32 bias) -> [Relu] ->
    [MaxPool] -> Q (uint8) -> DQ -> output. ``bias_scale_factor != 1`` puts the bias on a grid
    other than x_scale * w_scale (the rewrite must then leave the layer in float)."""
    rng = np.random.default_rng(seed)
    c_in = 4
    sx = np.float32(1 / 255)
    w = rng.integers(-127, 128, (channels, c_in, 3, 3)).astype(np.int8)
    sw = (rng.uniform(0.5, 2.0, channels) * 2e-3).astype(np.float32)
    b = rng.integers(-2000, 2000, channels).astype(np.int32)
    sb = (sx * sw * np.float32(bias_scale_factor)).astype(np.float32)
    sy = np.float32(0.02)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (np.array(sx), "sx"), (np.array(0, np.uint8), "zx"), (w, "w"), (sw, "sw"), (np.zeros(channels, np.int8), "zw"),
        (b, "b"), (sb, "sb"), (np.zeros(channels, np.int32), "zb"), (np.array(sy), "sy"), (np.array(3, np.uint8), "zy")]]
    nodes = [helper.make_node("QuantizeLinear", ["input", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    cur = "y"
    if relu:
        nodes.append(helper.make_node("Relu", [cur], ["yr"]))
        cur = "yr"
    if pool:
        nodes.append(helper.make_node("MaxPool", [cur], ["yp"], kernel_shape=[2, 2], strides=[2, 2]))
        cur = "yp"
    nodes += [helper.make_node("QuantizeLinear", [cur, "sy", "zy"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["output"])]
    side = 4 if pool else 8
    g = helper.make_graph(nodes, "conv_qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c_in, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", channels, side, side])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="qdq-test")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 4, 8, 8)).astype(np.float32)
