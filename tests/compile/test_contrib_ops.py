"""onnxruntime's com.microsoft QLinearAdd and QGemm against onnxruntime itself, bit for bit,
on random integer data (the forms its quantizer emits, plus the variants the converters allow)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from .helpers import Compiled, assert_bit_equal

MS = "com.microsoft"


def _model(node, inputs, outputs, inits):
    g = helper.make_graph([node], "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("b_shape", [[2, 3, 5, 5], [1]])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_add(dtype, b_shape):
    rng = np.random.default_rng(0)
    t = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    info = np.iinfo(dtype)
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("sa", 0.031), ("sb", 0.017), ("sc", 0.043))]
    inits += [numpy_helper.from_array(np.array(z, dtype), n) for n, z in (("za", 3), ("zb", -2 if dtype == np.int8 else 200),
                                                                           ("zc", 7))]
    node = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"], domain=MS)
    m = _model(node, [helper.make_tensor_value_info("a", t, [2, 3, 5, 5]), helper.make_tensor_value_info("b", t, b_shape)],
               [helper.make_tensor_value_info("c", t, [2, 3, 5, 5])], inits)
    a = rng.integers(info.min, info.max + 1, (2, 3, 5, 5)).astype(dtype)
    b = rng.integers(info.min, info.max + 1, b_shape).astype(dtype)
    (got,) = Compiled(m)(a, b)
    assert_bit_equal(got, _ort(m, {"a": a, "b": b}))


@pytest.mark.parametrize("quantized_output", [True, False])
def test_qgemm(quantized_output):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (6, 20)).astype(np.uint8)
    w = rng.integers(-127, 128, (9, 20)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.02, np.float32), "sa"),
             numpy_helper.from_array(np.array(5, np.uint8), "za"),
             numpy_helper.from_array(rng.uniform(1e-3, 3e-3, 9).astype(np.float32), "sw"),
             numpy_helper.from_array(np.zeros(9, np.int8), "zw"),
             numpy_helper.from_array(rng.integers(-5000, 5000, 9).astype(np.int32), "c")]
    ins = ["a", "sa", "za", "w", "sw", "zw", "c"]
    out_t = TensorProto.FLOAT
    if quantized_output:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "sy"), numpy_helper.from_array(np.array(9, np.uint8), "zy")]
        ins += ["sy", "zy"]
        out_t = TensorProto.UINT8
    node = helper.make_node("QGemm", ins, ["y"], domain=MS, transB=1, alpha=0.75)
    m = _model(node, [helper.make_tensor_value_info("a", TensorProto.UINT8, [6, 20])],
               [helper.make_tensor_value_info("y", out_t, [6, 9])], inits)
    onnx.checker.check_model(m)
    (got,) = Compiled(m)(a)
    assert_bit_equal(got, _ort(m, {"a": a}))


def _qdq_add_model(n: int, sa, za, sb, zb, sc, zc):
    """A residual add as onnxruntime's QDQ quantizer writes it: DQ(a), DQ(b) -> Add -> Q."""
    u8 = TensorProto.UINT8
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("sa", sa), ("sb", sb), ("sc", sc))]
    inits += [numpy_helper.from_array(np.array(v, np.uint8), k) for k, v in (("za", za), ("zb", zb), ("zc", zc))]
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["af"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"]),
             helper.make_node("Add", ["af", "bf"], ["cf"], name="residual"),
             helper.make_node("QuantizeLinear", ["cf", "sc", "zc"], ["c"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, u8, [1, n]) for k in "ab"],
                          [helper.make_tensor_value_info("c", u8, [1, n])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_qdq_residual_add_matches_onnxruntime_at_a_near_tie():
    """onnxruntime fuses DQ, DQ -> Add -> Q into QLinearAdd and computes MLAS's formula; the
    compile rewrites the same pattern into the same op. The scales are those of a residual add of
    an onnxruntime-quantized ResNet-18 where (200 - 138) * sa + 122 * sb is 155.5 output steps in
    MLAS's order of operations and 155.49998 in a float add then QuantizeLinear; every pair of
    inputs is tried."""
    from robustq_deploy.compile import prepare

    m = _qdq_add_model(256 * 256, 0.0026323937, 138, 0.0059577855, 0, 0.0057238475, 0)
    assert prepare(m).rewrites["qdq"]["qlinear_adds"] == ["residual"]
    a, b = (v.reshape(1, -1).astype(np.uint8) for v in np.meshgrid(np.arange(256), np.arange(256)))  # every pair
    (got,) = Compiled(m)(a, b)
    assert_bit_equal(got, _ort(m, {"a": a, "b": b}))


def test_qdq_add_with_types_that_differ_stays_float():
    """onnxruntime's QLinearAdd needs one 8-bit type on both inputs and the output; a pattern
    with an int8 output is left to the float path (as onnxruntime leaves it)."""
    from robustq_deploy.compile import prepare

    m = _qdq_add_model(8, 0.01, 3, 0.02, 5, 0.03, 0)
    zc = next(t for t in m.graph.initializer if t.name == "zc")
    zc.CopyFrom(numpy_helper.from_array(np.array(0, np.int8), "zc"))
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT8
    assert prepare(m).rewrites["qdq"]["qlinear_adds"] == []
