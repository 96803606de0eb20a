"""The per-op implementation hook and the bit-packed layers: XNOR/popcount equals the unpacked integer lowering
and the numpy reference of the ai.robustq ops, bit for bit; the registry's selection rules."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.compile.implementations import OpCall, implementation_names, lower, register_implementation
from robustq_deploy.export.robustq_ops import DOMAIN, pack_binary, pack_ternary

from .helpers import Compiled, assert_bit_equal, run_reference


def packed_model(op: str, w_packed: np.ndarray, x_shape: list, binary_input: bool, **attrs) -> onnx.ModelProto:
    """x (int8) [-> Where(x >= 0, 1, -1) when binary_input] -> ai.robustq op -> int32 output."""
    inits = [numpy_helper.from_array(w_packed, "wp"), numpy_helper.from_array(np.array(0, np.int8), "zero"),
             numpy_helper.from_array(np.array(1, np.int8), "one"), numpy_helper.from_array(np.array(-1, np.int8), "m1")]
    nodes, src = [], "x"
    if binary_input:
        nodes += [helper.make_node("GreaterOrEqual", ["x", "zero"], ["ge"]),
                  helper.make_node("Where", ["ge", "one", "m1"], ["xb"])]
        src = "xb"
    nodes.append(helper.make_node(op, [src, "wp"], ["y"], domain=DOMAIN, **attrs))
    g = helper.make_graph(nodes, "packed", [helper.make_tensor_value_info("x", TensorProto.INT8, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(DOMAIN, 1)])
    m.ir_version = 10
    return m


KIND = {"BinaryGemm": "binary_gemm", "BinaryConv2d": "binary_conv2d", "TernaryGemm": "ternary_gemm",
        "TernaryConv2d": "ternary_conv2d"}
CASES = {
    "BinaryGemm": (lambda rng: pack_binary(rng.choice([-1, 1], (12, 70))), [5, 70], {}),
    "BinaryConv2d": (lambda rng: pack_binary(rng.choice([-1, 1], (6, 3 * 3 * 3))), [2, 3, 9, 9],
                     {"kernel_shape": [3, 3], "strides": [2, 1]}),
    "TernaryGemm": (lambda rng: pack_ternary(rng.choice([-1, 0, 1], (4, 33))), [3, 33], {}),
    "TernaryConv2d": (lambda rng: pack_ternary(rng.choice([-1, 0, 1], (4, 2 * 2 * 2))), [2, 2, 5, 5],
                      {"kernel_shape": [2, 2], "pads": [1, 0, 1, 1]}),
}


@pytest.mark.parametrize("binary_input", [True, False])
@pytest.mark.parametrize("op", sorted(CASES))
def test_packed_ops_match_the_reference(op, binary_input):
    rng = np.random.default_rng(7)
    make_w, x_shape, attrs = CASES[op]
    model = packed_model(op, make_w(rng), x_shape, binary_input, **attrs)
    x = rng.integers(-128, 128, x_shape).astype(np.int8)
    compiled = Compiled(model)
    (got,) = compiled(x)
    assert_bit_equal(got, run_reference(model, x))
    xnor = binary_input and op.startswith("Binary")
    packed = {k: n for k, n in compiled.meta["implementations"].items() if k.startswith(KIND[op])}
    assert packed == {f"{KIND[op]}:{'xnor-popcount' if xnor else 'unpacked'}": 1}


def test_registry_order_fallthrough_and_forcing():
    calls = []

    @register_implementation("test_op", "never", priority=5)
    def never(call):
        calls.append("never")
        return None

    @register_implementation("test_op", "generic", priority=0)
    def generic(call):
        calls.append("generic")
        return "result"

    call = OpCall("test_op", None, None, {})
    assert lower(call) == "result" and calls == ["never", "generic"] and call.chosen == "generic"
    assert implementation_names("test_op") == ["never", "generic"]
    with pytest.raises(KeyError, match="no implementation 'fast'"):
        lower(OpCall("test_op", None, None, {}), only="fast")
    with pytest.raises(ValueError, match="twice"):
        register_implementation("test_op", "generic")(generic)
