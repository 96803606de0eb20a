"""The lowered x86 module of an int8 model contains no float convolution or matrix product.

The inspector (:mod:`robustq_deploy.compile.inspect`) looks at the Relax operators (conv / matmul
with a float result) and at every multiply-accumulate reduction block of the legalized TIR. It
must find the integer reductions of the project's lowering (they exist, and are int32) and no
float one; the same inspector on TVM's stock import of the QDQ model (float compute after
dequantize) finds float convolutions and products, so the check can fail.
"""
from __future__ import annotations

import onnx
import pytest

from robustq_deploy.compile import CompileOptions, compile_model, prepare
from robustq_deploy.compile.build import lower
from robustq_deploy.compile.inspect import float_compute, relax_float_ops, tir_float_macs, tir_macs

from .helpers import X86


@pytest.mark.parametrize("fmt", ["integer", "qdq"])
def test_int8_model_lowers_to_integer_conv_and_matmul_only(project_models, fmt):
    options = CompileOptions.of(X86, kernels=())
    mod, lowered, meta = compile_model(prepare(onnx.load(str(project_models[("int8", fmt)]))), options)
    assert relax_float_ops(mod) == [] and relax_float_ops(lowered) == []
    assert tir_float_macs(lowered) == []
    macs = tir_macs(lowered)
    assert len(macs) >= 4 and {d for _, _, d in macs} == {"int32"}  # 2 convs + 2 products, int32
    assert meta["integer_only"] and meta["float_compute"] == []


def test_the_inspector_sees_float_compute_in_tvm_stock_import(project_models):
    from tvm.relax.frontend.onnx import from_onnx

    stock = from_onnx(onnx.load(str(project_models[("int8", "qdq")])), keep_params_in_input=False)
    found = float_compute(lower(stock, X86))
    assert any("conv2d" in f for f in found) and any("float32" in f for f in found)


def test_float_sums_are_listed_apart_from_macs(ort_models, tmp_path):
    """A float average pool between integer layers is not a multiply-accumulate, but it is float
    code: ``float_reductions`` lists it (and only it), and an all-integer model lists nothing."""
    from onnx import TensorProto, helper

    from robustq_deploy.compile.inspect import tir_float_sums

    g = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["f"]),
         helper.make_node("GlobalAveragePool", ["f"], ["p"]),
         helper.make_node("QuantizeLinear", ["p", "s", "z"], ["y"])], "pool",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.UINT8, [], [7])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    _, lowered, meta = compile_model(prepare(m), CompileOptions.of(X86, kernels=()))
    assert meta["float_compute"] == [] and len(meta["float_reductions"]) == 1
    assert "float32" in meta["float_reductions"][0] and meta["float_reductions"] == tir_float_sums(lowered)
    _, _, meta = compile_model(prepare(onnx.load(str(ort_models["qoperator"]))), CompileOptions.of(X86, kernels=()))
    assert meta["float_reductions"] == [] and meta["integer_only"]
