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
