"""Input quantization (NHWC and rows layouts) and global average pooling vs references."""
from __future__ import annotations

import numpy as np
import pytest

from robustq_deploy.kernels import edges
from robustq_deploy.kernels import epilogue as E
from robustq_deploy.kernels import layout as L

from .conftest import rng, run_primfunc

PIXEL = float(np.float32(1 / 255))


@pytest.mark.parametrize("c,h,w,rows", [(1, 28, 28, (1, 30)), (3, 7, 9, (2, 42)), (2, 5, 5, None)])
def test_quantize_input_exact_with_ties(host, c, h, w, rows):
    st = L.Storage("uint8")
    spec = edges.QuantizeInput(c, h, w, PIXEL, 0, 0, 255, st, rows)
    func = edges.build_quantize(spec)
    for n in (1, 64):
        x = rng(n).random((n, c, h, w), dtype=np.float32) * 1.2 - 0.1  # out-of-range values clamp
        x[0, 0, 0, :3] = np.array([0.5, 1.5, 2.5], np.float32) * np.float32(PIXEL)  # ties go to even
        (got,) = run_primfunc(func, host, [x, np.zeros((n, *spec.out_shape), np.uint8)], 1)
        want = edges.quantize_reference(spec, x)
        if rows is None:
            np.testing.assert_array_equal(L.from_nhwc(got, st, c), want)
        else:
            np.testing.assert_array_equal(got, L.to_rows(want, st, rows[0], rows[1]))


def test_quantize_reference_matches_onnx_quantizelinear():
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = rng(1).random((2, 1, 4, 4), dtype=np.float32)
    x[0, 0, 0, :2] = np.array([0.5, 1.5], np.float32) * np.float32(PIXEL)
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [2, 1, 4, 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [PIXEL]), helper.make_tensor("z", TensorProto.UINT8, [], [0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    spec = edges.QuantizeInput(1, 4, 4, PIXEL, 0, 0, 255, L.Storage("uint8"))
    np.testing.assert_array_equal(edges.quantize_reference(spec, x), want)


def test_global_avgpool(host):
    st_in, st_out = L.Storage("uint8"), L.Storage("uint8")
    r = rng(2)
    from robustq_deploy.fixed_point import quantize_multiplier

    m0, sh = quantize_multiplier(np.full(64, 0.02 / 64))
    spec = edges.GlobalAvgPool(8, 8, 64, st_in, E.Requant((E.QuantOut(0, 0, 255, st_out),)))
    params = {"m0_0": m0, "shift_0": sh}
    func = edges.build_avgpool(spec)
    for n in (1, 64):
        x = r.integers(0, 255, (n, 64, 8, 8))
        (got,) = run_primfunc(func, host, [L.to_nhwc(x, st_in, 64)] + edges.pack_avgpool(spec, params)
                              + [np.zeros((n, 64), np.uint8)], 1)
        np.testing.assert_array_equal(got.astype(np.int64), edges.avgpool_reference(spec, x, params)[0])
