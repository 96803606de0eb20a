"""The numpy reference against onnxruntime, operator by operator, on seeded random data
(zero points, per-axis scales, padding, ties, int4), and its refusal of unknown operators."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.errors import InputError, UnsupportedError
from robustq_deploy.export.reference import ReferenceSession, run_reference

from .helpers import assert_bit_equal


def one_node(op: str, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray], out_type: int, n_in=None,
             opset: int = 21, **attrs) -> onnx.ModelProto:
    names = n_in or [*feeds, *consts]
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    out = onnx.ValueInfoProto(name="y")
    out.type.tensor_type.elem_type = out_type
    g = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], "g", inputs, [out], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def same_as_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_bit_equal(ReferenceSession(model).run(None, feeds)[0], got)
    return got


RNG = np.random.default_rng(42)


@pytest.mark.parametrize("ztype", [TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT4, TensorProto.INT4])
def test_quantize_linear_per_axis_with_ties(ztype):
    scale = np.array([1 / 255, 0.0371, 0.5], np.float32)
    x = RNG.normal(0, 2, (64, 3, 5)).astype(np.float32)
    x[:, :, 0] = (np.arange(64)[:, None] - 32) * 0.5 * scale  # exact .5 ties of x / scale
    zero = helper.make_tensor("z", ztype, [3], [1, 2, 3])
    m = one_node("QuantizeLinear", {"x": x}, {"s": scale}, ztype, n_in=["x", "s", "z"], axis=1)
    m.graph.initializer.append(zero)
    if ztype in (TensorProto.UINT4, TensorProto.INT4):  # onnxruntime returns 4-bit types packed
        cast = helper.make_node("Cast", ["y"], ["y8"], to=TensorProto.INT8)
        m.graph.node.append(cast)
        m.graph.output[0].name = "y8"
        m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT8
    y = same_as_ort(m, {"x": x})
    assert len(np.unique(y)) > 5


def test_dequantize_linear_per_axis_and_int32():
    x = RNG.integers(-128, 128, (10, 4, 3)).astype(np.int8)
    m = one_node("DequantizeLinear", {"x": x}, {"s": RNG.uniform(1e-3, 1, 4).astype(np.float32),
                                               "z": np.array([0, 1, -2, 5], np.int8)}, TensorProto.FLOAT, axis=1)
    same_as_ort(m, {"x": x})
    acc = RNG.integers(-(2**31), 2**31 - 1, (100, 7), endpoint=True).astype(np.int32)
    m = one_node("DequantizeLinear", {"x": acc}, {"s": RNG.uniform(1e-7, 1e-2, 7).astype(np.float32)}, TensorProto.FLOAT, axis=1)
    same_as_ort(m, {"x": acc})


@pytest.mark.parametrize("xtype", [np.uint8, np.int8])
def test_conv_integer_with_zero_point_padding_stride_groups(xtype):
    x = RNG.integers(0 if xtype == np.uint8 else -128, 128, (2, 4, 9, 8)).astype(xtype)
    w = RNG.integers(-127, 128, (6, 2, 3, 3)).astype(np.int8)
    m = one_node("ConvInteger", {"x": x}, {"w": w, "xz": np.array(3, xtype)}, TensorProto.INT32,
                 n_in=["x", "w", "xz"], pads=[1, 2, 0, 1], strides=[2, 1], group=2)
    same_as_ort(m, {"x": x})


def test_matmul_integer_with_zero_points():
    a = RNG.integers(0, 256, (5, 33)).astype(np.uint8)
    b = RNG.integers(-128, 128, (33, 7)).astype(np.int8)
    m = one_node("MatMulInteger", {"a": a}, {"b": b, "az": np.array(17, np.uint8), "bz": RNG.integers(-3, 3, 7).astype(np.int8)},
                 TensorProto.INT32)
    same_as_ort(m, {"a": a})


@pytest.mark.parametrize("xtype", [np.uint8, np.int8])
def test_qlinear_conv_and_matmul_float_requantization(xtype):
    lo = 0 if xtype == np.uint8 else -128
    x = RNG.integers(lo, 128, (4, 8, 7, 7)).astype(xtype)
    w = RNG.integers(-127, 128, (16, 8, 3, 3)).astype(np.int8)
    consts = {"xs": np.array(0.02, np.float32), "xz": np.array(2, xtype), "w": w,
              "ws": RNG.uniform(1e-3, 1e-2, 16).astype(np.float32), "wz": np.zeros(16, np.int8),
              "ys": np.array(0.05, np.float32), "yz": np.array(5, xtype), "b": RNG.integers(-9000, 9000, 16).astype(np.int32)}
    y = same_as_ort(one_node("QLinearConv", {"x": x}, consts, helper.np_dtype_to_tensor_dtype(np.dtype(xtype)),
                             pads=[1, 1, 1, 1]), {"x": x})
    assert y.min() == lo or y.max() == 127  # saturation is exercised
    a = x.reshape(4, -1)[:, :72]
    consts = {"as": consts["xs"], "az": consts["xz"], "b": w.reshape(16, -1).T.copy(), "bs": consts["ws"],
              "bz": consts["wz"], "ys": consts["ys"], "yz": consts["yz"]}
    same_as_ort(one_node("QLinearMatMul", {"a": a}, consts, helper.np_dtype_to_tensor_dtype(np.dtype(xtype))), {"a": a})


def test_integer_div_truncates_and_mod_follows_the_divisor():
    a = np.array([-7, -8, -1, 0, 1, 7, 8, -(2**62), 2**62 - 1], np.int64)
    for d in (4, -3):
        div = same_as_ort(one_node("Div", {"a": a}, {"d": np.array(d, np.int64)}, TensorProto.INT64), {"a": a})
        assert div.tolist() == [int(v / d) for v in a.tolist()[:7]] + div.tolist()[7:]
        same_as_ort(one_node("Mod", {"a": a}, {"d": np.array(d, np.int64)}, TensorProto.INT64, fmod=0), {"a": a})
        same_as_ort(one_node("Mod", {"a": a}, {"d": np.array(d, np.int64)}, TensorProto.INT64, fmod=1), {"a": a})


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_maxpool_on_8bit_with_padding(dtype):
    x = RNG.integers(0 if dtype == np.uint8 else -128, 128, (2, 3, 7, 7)).astype(dtype)
    same_as_ort(one_node("MaxPool", {"x": x}, {}, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), {"x": x})


def test_int32_relu_reduce_sum_threshold_ops():
    x = RNG.integers(-1000, 1000, (3, 4, 5, 5)).astype(np.int32)
    same_as_ort(one_node("Relu", {"x": x}, {}, TensorProto.INT32), {"x": x})
    same_as_ort(one_node("ReduceSum", {"x": x}, {"ax": np.array([2, 3], np.int64)}, TensorProto.INT32, keepdims=1), {"x": x})
    same_as_ort(one_node("GreaterOrEqual", {"x": x}, {"t": np.array([[[[5]], [[-5]], [[0]], [[999]]]], np.int32)},
                         TensorProto.BOOL), {"x": x})


def test_unknown_operators_are_listed_in_one_error():
    x = np.zeros((2,), np.float32)
    m = one_node("Sin", {"x": x}, {}, TensorProto.FLOAT)
    m.graph.node.append(helper.make_node("Cos", ["y"], ["z"]))
    m.graph.node.append(helper.make_node("Frobnicate", ["z"], ["w"], domain="ai.robustq"))
    with pytest.raises(UnsupportedError, match=r"no function for: Cos, Sin, ai\.robustq::Frobnicate$"):
        ReferenceSession(m)


def test_wrong_inputs_are_refused():
    x = np.zeros((2,), np.float32)
    m = one_node("Relu", {"x": x}, {}, TensorProto.FLOAT)
    with pytest.raises(InputError):
        run_reference(m, {"input": x})


@pytest.mark.parametrize("peak", [127, 2**12, 2**20, 2**26])  # float32, float64 and int64 tiers
def test_integer_products_are_exact_in_every_tier(peak):
    from robustq_deploy.export.reference import int_conv2d, int_matmul

    a = RNG.integers(-peak, peak, (7, 300), endpoint=True)
    b = RNG.integers(-peak, peak, (300, 5), endpoint=True)
    a[0, :] = peak  # the worst case of the bound
    b[:, 0] = peak
    want = (a.astype(object) @ b.astype(object)).astype(np.int64)
    assert np.array_equal(int_matmul(a, b), want)
    x = RNG.integers(-peak, peak, (2, 3, 5, 5), endpoint=True)
    w = RNG.integers(-peak, peak, (4, 3, 3, 3), endpoint=True)
    got = int_conv2d(x, w, pads=(1, 1, 1, 1))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(object)
    want = np.zeros((2, 4, 5, 5), object)
    for i in range(5):
        for j in range(5):
            want[:, :, i, j] = np.tensordot(xp[:, :, i:i + 3, j:j + 3], w.astype(object), axes=([1, 2, 3], [1, 2, 3]))
    assert np.array_equal(got, want.astype(np.int64))
