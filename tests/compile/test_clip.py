"""ONNX ``Clip`` (the project's converter: Relax ``maximum`` / ``minimum``) against onnxruntime:
attribute bounds (opset 6), input bounds (opset 13), a missing bound, a NaN bound (no bound),
integer tensors. (That the layout pass moves the kernels' transposes through it:
``tests/compile/test_ort_quantized.py``, the symmetric int8 form, whose ReLU6 is a float Clip.)"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from .helpers import assert_bit_equal, compile_artifact, run_artifact


def clip_model(opset: int, dtype: int, lo=None, hi=None, attrs: dict | None = None) -> onnx.ModelProto:
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    inits, names = [], ["x"]
    for name, v in (("lo", lo), ("hi", hi)):
        if v is None:
            names.append("")
        else:
            inits.append(helper.make_tensor(name, dtype, [], [np_dtype.type(v)]))
            names.append(name)
    while names and names[-1] == "":
        names.pop()
    if attrs is not None:
        names = ["x"]
    node = helper.make_node("Clip", names, ["y"], **(attrs or {}))
    graph = helper.make_graph([node], "clip", [helper.make_tensor_value_info("x", dtype, ["N", 3, 4, 5])],
                              [helper.make_tensor_value_info("y", dtype, ["N", 3, 4, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


CASES = {
    "attributes-opset6": (6, TensorProto.FLOAT, None, None, {"min": -0.5, "max": 0.75}),
    "inputs-opset13": (13, TensorProto.FLOAT, -0.25, 0.5, None),
    "min-only": (13, TensorProto.FLOAT, 0.0, None, None),
    "nan-max-is-no-bound": (13, TensorProto.FLOAT, -0.25, float("nan"), None),
    "int8": (13, TensorProto.INT8, -20, 33, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_clip_matches_onnxruntime(tmp_path, case):
    opset, dtype, lo, hi, attrs = CASES[case]
    model = clip_model(opset, dtype, lo, hi, attrs)
    path = tmp_path / "clip.onnx"
    onnx.save(model, path)
    r = np.random.default_rng(0)
    if dtype == TensorProto.INT8:
        x = r.integers(-128, 128, (2, 3, 4, 5)).astype(np.int8)
    else:
        x = r.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    want = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    lib = compile_artifact(path, "x86", tmp_path / "out")
    assert_bit_equal(run_artifact(lib, x), want)  # (onnx's reference evaluator ignores opset-6 attributes)
