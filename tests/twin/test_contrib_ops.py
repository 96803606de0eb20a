"""onnxruntime's com.microsoft quantized ops in the twin against onnxruntime itself, on random
integer data: bit for bit (QLinearSigmoid's table with MLAS's polynomial sigmoid, as onnxruntime
fills it). Surrogate gradients are finite and reach the input."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.twin.ops import TWIN_OPS, TwinOpContext
from robustq_deploy.twin.values import Val, const_val, int_val

MS = "com.microsoft"
U8, I8 = TensorProto.UINT8, TensorProto.INT8
NP = {U8: np.uint8, I8: np.int8}


def _ort(node, inputs: dict, inits: list, out_type, out_shape=None):
    vi = [helper.make_tensor_value_info(n, t, list(a.shape)) for n, (a, t) in inputs.items()]
    g = helper.make_graph([node], "g", vi, [helper.make_tensor_value_info("y", out_type, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a for n, (a, _) in inputs.items()})[0]


def _twin(node, inputs: dict, inits: list):
    """Run the twin op of ``node``; graph inputs get gradients through a float surrogate."""
    consts = {i.name: const_val(numpy_helper.to_array(i), i.data_type) for i in inits}
    leaves, vals = [], {}
    for n, (a, t) in inputs.items():
        leaf = torch.tensor(a.astype(np.float64), requires_grad=True)
        leaves.append(leaf)
        vals[n] = int_val(torch.from_numpy(a.astype(np.int64)), t, leaf)
    vals.update(consts)
    ctx = TwinOpContext(node, {a.name: helper.get_attribute_value(a) for a in node.attribute})
    out = TWIN_OPS[(node.domain, node.op_type)](ctx, *[vals[i] if i else None for i in node.input])
    return out, leaves


def _scalars(prefix_values):
    inits = []
    for name, v, t in prefix_values:
        inits.append(numpy_helper.from_array(np.array(v, NP.get(t, np.float32)), name))
    return inits


def _check(out: Val, leaves, want, max_levels: int = 0):
    got = out.exact.numpy()
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= max_levels, f"{int((diff > 0).sum())} outputs differ, by up to {diff.max()}"
    out.t.sum().backward()
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)
    assert leaves[0].grad.abs().sum() > 0


@pytest.mark.parametrize("t", [U8, I8])
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("b_shape", [[2, 3, 5, 5], [1]])
def test_binary_ops(op, t, b_shape):
    rng = np.random.default_rng(0)
    info = np.iinfo(NP[t])
    a = rng.integers(info.min, info.max + 1, (2, 3, 5, 5)).astype(NP[t])
    b = rng.integers(info.min, info.max + 1, b_shape).astype(NP[t])
    inits = _scalars([("sa", 0.031, None), ("za", 3, t), ("sb", 0.017, None), ("zb", -2 if t == I8 else 200, t),
                      ("sc", 0.043 if op == "QLinearAdd" else 0.3, None), ("zc", 7, t)])
    node = helper.make_node(op, ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["y"], domain=MS)
    inputs = {"a": (a, t), "b": (b, t)}
    out, leaves = _twin(node, inputs, inits)
    _check(out, leaves, _ort(node, inputs, inits, t, [2, 3, 5, 5]))


@pytest.mark.parametrize("quantized_output", [True, False])
def test_qgemm(quantized_output):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (6, 20)).astype(np.uint8)
    inits = [numpy_helper.from_array(rng.integers(-127, 128, (9, 20)).astype(np.int8), "w"),
             *_scalars([("sa", 0.02, None), ("za", 5, U8)]),
             numpy_helper.from_array(rng.uniform(1e-3, 3e-3, 9).astype(np.float32), "sw"),
             numpy_helper.from_array(np.zeros(9, np.int8), "zw"),
             numpy_helper.from_array(rng.integers(-5000, 5000, 9).astype(np.int32), "c")]
    ins = ["a", "sa", "za", "w", "sw", "zw", "c"]
    out_t = TensorProto.FLOAT
    if quantized_output:
        inits += _scalars([("sy", 0.05, None), ("zy", 9, U8)])
        ins += ["sy", "zy"]
        out_t = U8
    node = helper.make_node("QGemm", ins, ["y"], domain=MS, transB=1, alpha=0.75)
    inputs = {"a": (a, U8)}
    want = _ort(node, inputs, inits, out_t, [6, 9])
    out, leaves = _twin(node, inputs, inits)
    if quantized_output:
        _check(out, leaves, want)
    else:
        assert np.array_equal(out.t.detach().numpy(), want)


@pytest.mark.parametrize("node_kw", [
    {"op_type": "QLinearGlobalAveragePool", "channels_last": 0},
    {"op_type": "QLinearAveragePool", "kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
     "count_include_pad": 0},
    {"op_type": "QLinearAveragePool", "kernel_shape": [2, 2], "strides": [1, 1], "count_include_pad": 1},
])
def test_pools(node_kw):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (2, 4, 7, 7)).astype(np.uint8)
    inits = _scalars([("sx", 0.023, None), ("zx", 11, U8), ("sy", 0.019, None), ("zy", 4, U8)])
    kw = dict(node_kw)
    node = helper.make_node(kw.pop("op_type"), ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, **kw)
    inputs = {"x": (x, U8)}
    out, leaves = _twin(node, inputs, inits)
    _check(out, leaves, _ort(node, inputs, inits, U8))


@pytest.mark.parametrize("op,levels", [("QLinearLeakyRelu", 0), ("QLinearSigmoid", 0)])
@pytest.mark.parametrize("t", [U8, I8])
def test_lookup_tables(op, levels, t):
    info = np.iinfo(NP[t])
    x = np.arange(info.min, info.max + 1).astype(NP[t]).reshape(1, 4, 8, 8)  # every input value once
    inits = _scalars([("sx", 0.05, None), ("zx", 7, t), ("sy", 1 / 255 if op == "QLinearSigmoid" else 0.04, None),
                      ("zy", 0 if op == "QLinearSigmoid" else 3, t)])
    node = helper.make_node(op, ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS,
                            **({"alpha": 0.1} if op == "QLinearLeakyRelu" else {}))
    inputs = {"x": (x, t)}
    out, leaves = _twin(node, inputs, inits)
    _check(out, leaves, _ort(node, inputs, inits, t, [1, 4, 8, 8]), max_levels=levels)


def test_concat_requantizes_each_input():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (2, 3, 4, 4)).astype(np.uint8)
    b = rng.integers(0, 256, (2, 5, 4, 4)).astype(np.uint8)
    inits = _scalars([("sy", 0.04, None), ("zy", 10, U8), ("sa", 0.03, None), ("za", 2, U8), ("sb", 0.04, None),
                      ("zb", 10, U8)])
    node = helper.make_node("QLinearConcat", ["sy", "zy", "a", "sa", "za", "b", "sb", "zb"], ["y"], domain=MS, axis=1)
    inputs = {"a": (a, U8), "b": (b, U8)}
    out, leaves = _twin(node, inputs, inits)
    _check(out, leaves, _ort(node, inputs, inits, U8, [2, 8, 4, 4]))


@pytest.mark.parametrize("sx, zx, sy", [(0.02654201164841652, 86, 1 / 256), (0.053894903510808945, 43, 0.004233196377754211)])
def test_sigmoid_table_is_onnxruntimes_at_a_tie(sx, zx, sy):
    """Scales where the correctly rounded sigmoid and MLAS's polynomial quantize one table entry
    to different levels (found by search): the twin's entry is onnxruntime's."""
    x = np.arange(256).astype(np.uint8).reshape(1, 4, 8, 8)
    inits = _scalars([("sx", sx, None), ("zx", zx, U8), ("sy", sy, None), ("zy", 0, U8)])
    node = helper.make_node("QLinearSigmoid", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS)
    inputs = {"x": (x, U8)}
    out, leaves = _twin(node, inputs, inits)
    _check(out, leaves, _ort(node, inputs, inits, U8, [1, 4, 8, 8]))


@pytest.mark.parametrize("attrs", [{"axis": -1, "opset": 13}, {"axis": 1, "opset": 13}, {"axis": 1, "opset": 12},
                                   {"opset": 12}])
@pytest.mark.parametrize("t", [U8, I8])
def test_qlinear_softmax(t, attrs):
    """Random rows plus rows tied at the top, a y_scale whose reciprocal is not an integer."""
    rng = np.random.default_rng(4)
    info = np.iinfo(NP[t])
    x = rng.integers(info.min, info.max + 1, (3, 7, 10)).astype(NP[t])
    x[0, :, 0] = info.max
    inits = _scalars([("sx", 0.043, None), ("zx", 2, t), ("sy", 0.0041, None), ("zy", 0 if t == U8 else -128, t)])
    node = helper.make_node("QLinearSoftmax", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, **attrs)
    inputs = {"x": (x, t)}
    out, leaves = _twin(node, inputs, inits)
    _check(out, leaves, _ort(node, inputs, inits, t, [3, 7, 10]))
