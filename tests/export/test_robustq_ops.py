"""The ai.robustq operators: bit order, packing round trips, schemas and shape inference, and the
model-local function bodies (run by onnxruntime) against the numpy reference and torch."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.export import robustq_ops as R

from .helpers import assert_bit_equal, run_ort, run_ref


def test_bit_order_is_lsb_first_per_row():
    # weights of one channel, k = 0..9: +1 at k = 0, 3, 8 -> byte0 = 0b00001001, byte1 = 0b00000001
    w = -np.ones((1, 10), np.int8)
    w[0, [0, 3, 8]] = 1
    assert R.pack_binary(w).tolist() == [[0b00001001, 0b00000001]]
    t = np.zeros((1, 10), np.int8)
    t[0, 1], t[0, 9] = 1, -1
    assert R.pack_ternary(t).tolist() == [[[0b10, 0]], [[0, 0b10]]]


def test_conv_weight_flattening_order_is_c_kh_kw():
    w = -np.ones((1, 2, 2, 2), np.int8)
    w[0, 1, 0, 1] = 1  # k = (c * kH + i) * kW + j = (1 * 2 + 0) * 2 + 1 = 5
    assert R.pack_binary(w).tolist() == [[1 << 5]]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(m, k, seed):
    rng = np.random.default_rng(seed)
    b = rng.choice(np.array([-1, 1], np.int8), (m, k))
    t = rng.integers(-1, 2, (m, k)).astype(np.int8)
    pb, pt = R.pack_binary(b), R.pack_ternary(t)
    assert pb.shape == (m, (k + 7) // 8) and pt.shape == (2, m, (k + 7) // 8)
    assert np.array_equal(R.unpack_weights("binary", pb, k), b)
    assert np.array_equal(R.unpack_weights("ternary", pt, k), t)
    assert R.packed_weight_bytes("binary", m, k) == pb.nbytes and R.packed_weight_bytes("ternary", m, k) == pt.nbytes
    if k % 8:  # padding bits are zero
        assert not (pb[:, -1] >> (k % 8)).any()


def test_packing_refuses_other_levels():
    with pytest.raises(ValueError):
        R.pack_binary(np.array([[1, 0]]))
    with pytest.raises(ValueError):
        R.pack_ternary(np.array([[2, 0]]))


def test_schemas_are_registered():
    for name in R.OPS:
        s = onnx.defs.get_schema(name, R.VERSION, R.DOMAIN)
        assert s.has_type_and_shape_inference_function
    R.register_schemas()  # idempotent


def _model(name: str, x: np.ndarray, wp: np.ndarray, opset: int, **attrs) -> onnx.ModelProto:
    out_rank = 4 if R.OPS[name].layout == "conv" else 2
    g = helper.make_graph(
        [helper.make_node(name, ["x", "wp"], ["y"], domain=R.DOMAIN, **attrs)], "g",
        [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), ["N", *x.shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N"] + [None] * (out_rank - 1))],
        [numpy_helper.from_array(wp, "wp")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(R.DOMAIN, R.VERSION)],
                          functions=[R.function_proto(name, opset)])
    m.ir_version = 10
    return m


CASES = [  # (kernel, strides, pads [t, l, b, r], input HxW)
    ((3, 3), (1, 1), (0, 0, 0, 0), (6, 6)),
    ((3, 3), (2, 1), (1, 0, 1, 1), (7, 6)),
    ((1, 1), (1, 1), (0, 0, 0, 0), (4, 5)),
    ((2, 3), (1, 2), (1, 1, 0, 2), (5, 7)),
]


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("xtype", [np.int8, np.uint8])
@pytest.mark.parametrize("name", sorted(R.OPS))
def test_function_body_equals_reference_and_torch(name, xtype, opset):
    spec = R.OPS[name]
    rng = np.random.default_rng(hash((name, opset, xtype.__name__)) % 2**32)
    lo = -128 if xtype == np.int8 else 0
    for case, (ks, st_, pads, hw) in enumerate(CASES if spec.layout == "conv" else CASES[:2]):
        c, m = 3 + case, 5 + 3 * case
        shape = (m, c, *ks) if spec.layout == "conv" else (m, c * 9)
        levels = (rng.choice(np.array([-1, 1], np.int8), shape) if spec.weights == "binary"
                  else rng.integers(-1, 2, shape).astype(np.int8))
        wp = R.pack_binary(levels) if spec.weights == "binary" else R.pack_ternary(levels)
        if spec.layout == "conv":
            x = rng.integers(lo, 128, (2, c, *hw)).astype(xtype)
            model = _model(name, x, wp, opset, kernel_shape=list(ks), strides=list(st_), pads=list(pads))
            xt = torch.nn.functional.pad(torch.tensor(x, dtype=torch.float64), (pads[1], pads[3], pads[0], pads[2]))
            want = torch.nn.functional.conv2d(xt, torch.tensor(levels, dtype=torch.float64), stride=st_).numpy()
        else:
            x = rng.integers(lo, 128, (3, c * 9)).astype(xtype)
            model = _model(name, x, wp, opset)
            want = x.astype(np.float64) @ levels.T.astype(np.float64)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type
        assert [d.dim_value for d in inferred.shape.dim[1:]] == list(want.shape[1:])
        got = run_ort(model, x)
        assert_bit_equal(got, want.astype(np.int32))
        assert_bit_equal(run_ref(model, x), got)


def test_function_bodies_need_opset_18():
    with pytest.raises(ValueError, match="opset >= 18"):
        R.function_proto("BinaryGemm", 17)
