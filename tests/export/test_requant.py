"""The fixed-point requantization chain in standard ONNX ops is exactly
``robustq_deploy.fixed_point.requantize``: the floor shift by Mod/Sub/Div is proven on the
whole int32 x mantissa x shift range, in onnxruntime and in the numpy reference."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from robustq_deploy.export.graph import GraphBuilder
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.export.requant import emit_fixed_point, emit_requantize, match_requantize
from robustq_deploy.fixed_point import multiplier_for, requantize, rounding_shift

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _chain_model(m0: np.ndarray, n: np.ndarray, qmin: int, qmax: int, out_dtype: str,
                 expose_shift: bool = True) -> onnx.ModelProto:
    """acc int32 [N, C] -> requantized [N, C]; with ``expose_shift`` the shift result (before the
    Clip) is a second output (which keeps the chain from being fused: it is no longer private)."""
    b = GraphBuilder("requant")
    x = b.add_input("acc", TensorProto.INT32, ["N", len(m0)])
    y = emit_fixed_point(b, x, m0, n, qmin, qmax, out_dtype, 2, "t")
    b.add_output(y, TensorProto.INT8 if out_dtype == "int8" else TensorProto.UINT8, ["N", len(m0)])
    if expose_shift:
        shift = next(nd.output[0] for nd in b.nodes if nd.op_type == "Div")
        b.add_output(shift, TensorProto.INT64, ["N", len(m0)])
    return b.build(21)


def _accumulators(rng: np.random.Generator, n: np.ndarray, m0: np.ndarray) -> np.ndarray:
    edge = np.array([INT32_MIN, INT32_MIN + 1, -65537, -3, -2, -1, 0, 1, 2, 3, 65537, INT32_MAX - 1, INT32_MAX])
    rand = rng.integers(INT32_MIN, INT32_MAX, 2000, endpoint=True)
    small = rng.integers(-1000, 1000, 500)
    acc = np.concatenate([edge, rand, small]).astype(np.int32)
    return np.repeat(acc[:, None], len(m0), axis=1)


def test_floor_shift_is_exact_over_the_whole_range():
    rng = np.random.default_rng(0)
    n = np.arange(1, 63, dtype=np.int64)  # every shift the multiplier format allows
    m0 = rng.integers(2**30, 2**31, len(n), dtype=np.int64)
    m0[:3] = [2**30, 2**31 - 1, 2**31 - 1]  # mantissa extremes
    model = _chain_model(m0, n, -128, 127, "int8")
    onnx.checker.check_model(model, full_check=True)
    acc = _accumulators(rng, n, m0)
    want_shift = rounding_shift(acc.astype(np.int64) * m0, n)
    want = requantize(acc, m0, n, 0, -128, 127).astype(np.int8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, got_shift = sess.run(None, {"acc": acc})
    assert np.array_equal(got_shift, want_shift)
    assert np.array_equal(got, want)
    ref, ref_shift = ReferenceSession(model).run(None, {"acc": acc})  # op by op: nothing to fuse
    assert np.array_equal(ref, want) and ref.dtype == np.int8
    assert np.array_equal(ref_shift, want_shift)
    fused = ReferenceSession(_chain_model(m0, n, -128, 127, "int8", expose_shift=False))
    assert len(fused.matches) == 1
    assert np.array_equal(fused.run(None, {"acc": acc})[0], want)


def test_rounding_is_half_toward_plus_infinity():
    # m0 * 2**-n = 1/2 exactly: acc / 2 with ties at odd acc
    model = _chain_model(np.array([2**30]), np.array([31]), -128, 127, "int8")
    acc = np.arange(-7, 8, dtype=np.int32)[:, None]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"acc": acc})[0]
    assert got[:, 0].tolist() == [-3, -3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert np.array_equal(ReferenceSession(model).run(None, {"acc": acc})[0], got)


@pytest.mark.parametrize("qmin,qmax,dtype", [(0, 255, "uint8"), (0, 15, "uint8"), (-127, 127, "int8"), (-7, 7, "int8")])
def test_clamp_and_storage_type(qmin, qmax, dtype):
    rng = np.random.default_rng(1)
    acc_scale = rng.uniform(1e-5, 1e-3, 8).astype(np.float32)
    b = GraphBuilder("rq")
    x = b.add_input("acc", TensorProto.INT32, ["N", 8, 3, 3])
    y = emit_requantize(b, x, acc_scale, np.float32(0.02), qmin, qmax, dtype, 4, "l")
    b.add_output(y, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), ["N", 8, 3, 3])
    model = b.build(21)
    acc = rng.integers(-100000, 100000, (5, 8, 3, 3)).astype(np.int32)
    m0, n = multiplier_for(acc_scale, np.float32(0.02))
    want = requantize(acc, m0[None, :, None, None], n[None, :, None, None], 0, qmin, qmax).astype(dtype)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"acc": acc})[0]
    assert np.array_equal(got, want) and got.dtype == np.dtype(dtype)
    assert np.array_equal(ReferenceSession(model).run(None, {"acc": acc})[0], want)
    assert got.min() >= qmin and got.max() <= qmax and {got.min(), got.max()} == {qmin, qmax}


def test_matcher_finds_exactly_the_emitted_chains():
    model = _chain_model(np.array([2**30, 2**30 + 7]), np.array([31, 40]), -128, 127, "int8", expose_shift=False)
    (m,) = match_requantize(model.graph)
    assert m.input == "acc" and m.n.reshape(-1).tolist() == [31, 40] and (m.qmin, m.qmax) == (-128, 127)
    assert m.out_type == TensorProto.INT8 and len(m.nodes) == 8
    # the shift result is also a graph output here, so the chain is not private: no fusion...
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    for node in broken.graph.node:
        if node.op_type == "Mod":
            node.attribute[0].i = 1  # fmod=1 truncates: no longer the floor shift
    assert match_requantize(broken.graph) == []
