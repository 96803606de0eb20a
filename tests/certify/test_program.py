"""The program read from a graph computes what the reference interpreter computes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from robustq_deploy.certify import program as P
from robustq_deploy.certify.program import read_program, run
from robustq_deploy.errors import UnsupportedError
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.export.reference.deviation import rounding_deviation

from .conftest import synthetic


def _inputs(n: int = 500) -> np.ndarray:
    x, _ = synthetic(n, 7)
    return x


@pytest.mark.parametrize("key", [("tiny", "integer"), ("tiny_bnn", "integer")])
def test_integer_program_is_bit_exact(tiny_onnx, key):
    model = tiny_onnx[key]
    prog = read_program(model)
    x = _inputs()
    ref = ReferenceSession(model).run_all({"input": x})
    got = run(prog, x)
    compared = 0
    for name, graph_name in prog.graph_names.items():
        if graph_name in ref:
            np.testing.assert_array_equal(got[name].astype(np.float64), ref[graph_name].astype(np.float64), err_msg=name)
            compared += 1
    assert compared >= 8
    assert prog.form == "integer"


def test_qdq_program_within_rounding_deviation(tiny_onnx):
    model = tiny_onnx[("tiny", "qdq")]
    prog = read_program(model)
    assert prog.form == "qdq"
    x = _inputs()
    (bound,) = rounding_deviation(model, {"input": x}).values()
    ref = ReferenceSession(model).run(None, {"input": x})[0]
    got = run(prog, x)[prog.output]
    assert np.all(np.abs(got.astype(np.float64) - ref) <= bound + 1e-6)


def test_steps_of_the_tiny_graphs(tiny_onnx):
    kinds = [type(s).__name__ for s in read_program(tiny_onnx[("tiny", "integer")]).steps]
    assert kinds == ["InputQuant", "Linear", "AddConst", "Requant", "MaxPool", "Reshape", "Linear", "AddConst",
                     "Requant", "Linear", "AddConst", "Output"]
    bnn = read_program(tiny_onnx[("tiny_bnn", "integer")])
    assert any(isinstance(s, P.Sign) for s in bnn.steps)
    qdq = [type(s).__name__ for s in read_program(tiny_onnx[("tiny", "qdq")]).steps]
    assert qdq.count("Requant") == 2 and qdq.count("Clamp") == 2 and "MaxPool" in qdq


def test_int32_wrap_is_part_of_the_program(tiny_models):
    """A bias saturated to INT32_MIN makes the engines wrap; the program wraps as they do."""
    import copy

    import torch

    from robustq_deploy.export import export_model

    m = copy.deepcopy(tiny_models["tiny"])
    with torch.no_grad():
        m.conv1.weight[0] *= 1e-7  # a dying channel: its weight scale hits the floor, its bias saturates
        m.conv1.bias[0] = -0.5
    model = export_model(m, "integer", 21)
    assert m.conv1.integer_params()["bias"][0] == np.iinfo(np.int32).min
    prog = read_program(model)
    x = _inputs(200)
    np.testing.assert_array_equal(run(prog, x)[prog.output], ReferenceSession(model).run(None, {"input": x})[0])


def _graph(nodes, inits, out_type=TensorProto.FLOAT):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 2, 2])],
                          [helper.make_tensor_value_info("y", out_type, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def test_unsupported_graph_names_every_problem():
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [1 / 255]),
             helper.make_tensor("z", TensorProto.UINT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="d"),
             helper.make_node("Sigmoid", ["d"], ["t"], name="sig"),
             helper.make_node("Tanh", ["t"], ["y"], name="tanh")]
    with pytest.raises(UnsupportedError, match="Sigmoid.*Tanh"):
        read_program(_graph(nodes, inits))


def test_float_layer_is_refused():
    """A Conv whose input is a float value (not a dequantized integer tensor) is a float layer."""
    inits = [helper.make_tensor("w", TensorProto.INT8, [1, 1, 1, 1], [3]),
             helper.make_tensor("ws", TensorProto.FLOAT, [], [0.1]),
             helper.make_tensor("wz", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dw"),
             helper.make_node("Conv", ["input", "wd"], ["y"], name="conv")]
    with pytest.raises(UnsupportedError, match="conv"):
        read_program(_graph(nodes, inits))


def test_reads_an_onnx_file(tmp_path, tiny_onnx):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_onnx[("tiny", "integer")], str(path))
    assert read_program(path).num_classes == 3


def test_complete_refuses_binary_layers(tiny_onnx, tiny_points):
    from robustq_deploy.certify import certify

    x, y = tiny_points
    with pytest.raises(UnsupportedError, match="sign thresholds"):
        certify(tiny_onnx[("tiny_bnn", "integer")], x, y, 1 / 255, "complete")


def test_bad_method_and_radius(tiny_onnx, tiny_points):
    from robustq_deploy.certify import certify
    from robustq_deploy.errors import ConfigError

    x, y = tiny_points
    with pytest.raises(ConfigError, match="method"):
        certify(tiny_onnx[("tiny", "integer")], x, y, 0.1, "exact")
    with pytest.raises(ConfigError, match="eps"):
        certify(tiny_onnx[("tiny", "integer")], x, y, -0.1)
