"""The qdq form: int4 weights as INT4 initializers at opset 21, narrow grids clipped in float,
ternary/binary weights as int8 levels; onnxruntime, the reference and the twin agree."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from robustq_deploy.export import export_model

from .helpers import run_ort, run_ref, run_twin


@pytest.mark.parametrize("key", ["int8", "int4", "ternary"])
def test_qdq_runs_and_agrees(models, digits_data, key):
    m = export_model(models[key], "qdq", 21)
    onnx.checker.check_model(m, full_check=True)
    x = digits_data[0]
    out, ref, twin = run_ort(m, x), run_ref(m, x), run_twin(models[key], x)
    # float ops: not bit-exact; the QDQ graph computes the twin's function
    assert (out.argmax(1) == twin.argmax(1)).mean() >= 0.99
    assert (ref.argmax(1) == twin.argmax(1)).mean() >= 0.99
    assert np.abs(ref - twin).max() <= 1e-3 * np.abs(twin).max()


def test_int4_storage_depends_on_opset(models):
    def weight_types(opset):
        m = export_model(models["int4"], "qdq", opset)
        return {i.data_type for i in m.graph.initializer if i.name.endswith("_w")}
    assert weight_types(21) == {TensorProto.INT4}
    assert weight_types(20) == {TensorProto.INT8}


def test_narrow_grids_are_clipped_before_quantizing(models):
    m = export_model(models["int4"], "qdq", 21)
    clips = [n for n in m.graph.node if n.op_type == "Clip"]
    assert len(clips) == 3  # the 4-bit inputs of conv2, fc1, fc2 (conv1 reads uint8 pixels)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    for c in clips:
        assert float(inits[c.input[1]]) == 0.0 and float(inits[c.input[2]]) > 0


def test_ternary_levels_are_int8(models):
    m = export_model(models["ternary"], "qdq", 21)
    for i in m.graph.initializer:
        if i.name.endswith("_w"):
            assert i.data_type == TensorProto.INT8
            assert set(np.unique(onnx.numpy_helper.to_array(i))) <= {-1, 0, 1}
