"""The QDQ rewrite: what it fuses, what it leaves in float and why, and its numbers.

LSB bound (stated in :mod:`robustq_deploy.compile.qdq`): on a layer with identical inputs, the
fused integer layer and onnxruntime's *float* execution of the QDQ graph (graph optimizations
off) differ by at most 1 LSB of the output grid, at the rare near-ties; with ``requant="float"``
the fused layer equals onnxruntime's default execution (which fuses QDQ itself) bit for bit.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from robustq_deploy.compile.qdq import FUSED_DOMAIN, rewrite_qdq

from .helpers import Compiled, assert_bit_equal
from .qdq_models import conv_qdq, inputs


def run_ort(model, x, optimize: bool) -> np.ndarray:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_rewrite_fuses_conv_relu_pool_q():
    m, report = rewrite_qdq(conv_qdq(), "fixed-point")
    ops = [(n.domain, n.op_type) for n in m.graph.node]
    assert (FUSED_DOMAIN, "FusedConv") in ops and ("", "MaxPool") in ops
    assert ("", "Conv") not in ops and ("", "Relu") not in ops
    fused = next(n for n in m.graph.node if n.op_type == "FusedConv")
    attrs = {a.name: a for a in fused.attribute}
    assert attrs["lo"].i == 3 and attrs["hi"].i == 255  # ReLU folded: the zero point is the floor
    assert report.fused == ["conv (Conv)"] and report.float_layers == []


def test_bias_on_another_grid_stays_float_with_a_reason():
    m, report = rewrite_qdq(conv_qdq(bias_scale_factor=2.0), "fixed-point")
    assert any(n.op_type == "Conv" for n in m.graph.node)
    assert report.float_layers == ["conv (Conv): bias scale differs from x_scale * w_scale"]
    compiled = Compiled(conv_qdq(bias_scale_factor=2.0), requant="fixed-point")
    assert compiled.meta["float_compute"], "an unfused layer must show up as float compute"


@pytest.mark.parametrize("requant", ["float", "fixed-point"])
def test_lsb_bound_against_float_qdq(requant):
    model = conv_qdq(seed=3, pool=False)
    x = inputs(64)
    (got,) = Compiled(model, requant=requant)(x)
    sy = np.float32(0.02)
    steps = np.rint((got - run_ort(model, x, optimize=False)) / sy)
    assert np.abs(steps).max() <= 1
    assert np.count_nonzero(steps) <= 0.01 * steps.size  # near-ties only
    if requant == "float":
        assert_bit_equal(got, run_ort(model, x, optimize=True))
