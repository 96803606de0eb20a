"""The importer: converters registered alongside TVM's ONNX frontend without patching it, one
up-front error listing every unsupported op, sub-byte initializers, opset dispatch."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.compile.importer import import_onnx, plan
from robustq_deploy.compile.registry import Converter, converter_for, register_converter, registered_ops
from robustq_deploy.errors import UnsupportedError

from .helpers import Compiled, assert_bit_equal


def _model(nodes, inputs, outputs, inits=(), opsets=(("", 21),)):
    g = helper.make_graph(nodes, "t", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 10
    return m


def test_tvm_frontend_hook_points_exist():
    # The subclass overrides exactly these methods of TVM 0.27's importer; a TVM upgrade that
    # renames them must fail here, not silently bypass the project's converters.
    from tvm.relax.frontend.onnx import onnx_frontend as f

    for name in ("_convert_operator", "_check_for_unsupported_ops", "_parse_array", "from_onnx"):
        assert callable(getattr(f.ONNXGraphImporter, name))
    assert "Conv" in f._get_convert_map()


def test_stock_tvm_is_left_untouched():
    """After the project's import, TVM's own frontend still refuses QLinearConv: nothing was patched."""
    from tvm.relax.frontend.onnx import from_onnx

    from .test_node_cases import CASES, bound_case

    model, _, _ = bound_case(CASES["test_qlinearconv"])
    import_onnx(model)
    with pytest.raises(Exception, match="QLinearConv"):
        from_onnx(model)


def test_one_error_lists_every_unsupported_op():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Frobnicate", ["x"], ["a"]),
             helper.make_node("Gelu", ["a"], ["b"], domain="com.microsoft"),
             helper.make_node("Frobnicate", ["b"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["d"])]
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             helper.make_tensor("z", TensorProto.FLOAT8E4M3FN, [], [0])]
    m = _model(nodes, [x], [helper.make_tensor_value_info("d", TensorProto.FLOAT8E4M3FN, [2])], inits,
               (("", 21), ("com.microsoft", 1)))
    with pytest.raises(UnsupportedError) as err:
        import_onnx(m, "bad.onnx")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("bad.onnx: cannot compile 4 node(s)")
    assert "Frobnicate (no converter) x2" in msg and "com.microsoft::Gelu (no converter)" in msg
    assert "float8e4m3fn" in msg


def test_opset_older_than_every_converter_is_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s")]
    m = _model([helper.make_node("QuantizeLinear", ["x", "s"], ["y"])], [x],
               [helper.make_tensor_value_info("y", TensorProto.UINT8, [2])], inits, (("", 9),))
    _, problems = plan(m)
    assert problems == ["QuantizeLinear (opset 9; converters exist from opset 10)"]


def test_int4_initializers_are_unpacked():
    # TVM's own importer fails on these with "TensorCopyFromBytes: size mismatch".
    w = np.array([[-8, 7, 3], [1, -1, 0]], np.int8)
    import ml_dtypes

    inits = [numpy_helper.from_array(w.astype(ml_dtypes.int4), "w"), numpy_helper.from_array(np.array(0.5, np.float32), "s"),
             numpy_helper.from_array(np.array(1, np.int8).astype(ml_dtypes.int4), "z")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"]), helper.make_node("MatMul", ["wf", "x"], ["y"])]
    m = _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], inits)
    xv = np.arange(6, dtype=np.float32).reshape(3, 2)
    (got,) = Compiled(m)(xv)
    assert_bit_equal(got, ((w.astype(np.float32) - 1) * np.float32(0.5)) @ xv)


def test_registry_refuses_duplicates_and_empty_converters():
    assert "QLinearConv" in registered_ops() and converter_for("ai.onnx", "QLinearConv") is converter_for("", "QLinearConv")
    with pytest.raises(ValueError, match="twice"):
        register_converter("QLinearConv")(type("Dup", (Converter,), {"impl_v1": classmethod(lambda c, x, i: None)}))
    with pytest.raises(ValueError, match="no impl_vN"):
        register_converter("NoImpl", domain="test.domain")(type("Empty", (Converter,), {}))


def test_opset_dispatch_picks_the_latest_version_not_above():
    conv = converter_for("", "QuantizeLinear")
    assert conv.for_opset(12).__name__ == "impl_v10" and conv.for_opset(20).__name__ == "impl_v13"
    assert conv.for_opset(28).__name__ == "impl_v23" and conv.for_opset(9) is None
