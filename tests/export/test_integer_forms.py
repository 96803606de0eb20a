"""The integer export forms (integer, qoperator, packed) on trained digits models: onnx.checker,
onnxruntime == numpy reference bit for bit, agreement with the twin, integer-only graphs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from robustq_deploy.export import export_model
from robustq_deploy.export.analysis import float_constants_inside, float_tensors_inside
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.export.robustq_ops import DOMAIN

from .helpers import assert_bit_equal, run_ort, run_ref, run_twin

FORMS = ("integer", "qoperator", "packed")
KEYS = ("int8", "int4", "ternary", "bnn")


@pytest.fixture(scope="module")
def exported(models) -> dict[tuple[str, str], onnx.ModelProto]:
    return {(k, f): export_model(models[k], f, 21) for k in KEYS for f in FORMS}


@pytest.mark.parametrize("fmt", FORMS)
@pytest.mark.parametrize("key", KEYS)
def test_checker_ort_and_reference_agree_bit_for_bit(exported, models, digits_data, key, fmt):
    m = exported[(key, fmt)]
    onnx.checker.check_model(m, full_check=True)
    x, y = digits_data
    out = run_ort(m, x)
    assert out.dtype == np.float32 and out.shape == (len(x), 10)
    ref = ReferenceSession(m)
    assert len(ref.matches) == sum(n.op_type == "Mod" for n in m.graph.node)  # every chain runs fused
    assert_bit_equal(out, ref.run(None, {"input": x})[0])
    assert_bit_equal(out, run_ref(m, x, fuse=False))  # the op-by-op requantization chain agrees
    twin = run_twin(models[key], x)
    assert (out.argmax(1) == twin.argmax(1)).mean() >= 0.99
    if key == "int8":  # a trained model: the deployed integer graph keeps the accuracy
        assert (out.argmax(1) == y).mean() >= 0.9


@pytest.mark.parametrize("key", KEYS)
def test_int32_accumulators_match(exported, digits_data, key):
    """Every intermediate integer tensor of the integer form, not only the logits."""
    import onnxruntime as ort

    m = exported[(key, "integer")]
    ref = ReferenceSession(m, fuse_requant=False).run_all({"input": digits_data[0][:50]})
    g = onnx.ModelProto()
    g.CopyFrom(m)
    names = [n.output[0] for n in m.graph.node if n.op_type in ("ConvInteger", "MatMulInteger", "Add", "Where")]
    for name in names:
        g.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
    for name, got in zip(names, sess.run(names, {"input": digits_data[0][:50]})):
        assert_bit_equal(got, ref[name])


@pytest.mark.parametrize("fmt", FORMS)
@pytest.mark.parametrize("key", KEYS)
def test_no_float_between_input_quantizer_and_output_dequantizer(exported, key, fmt):
    m = exported[(key, fmt)]
    assert float_tensors_inside(m) == []
    consts = float_constants_inside(m)
    if fmt == "qoperator":  # only the scales of the QOperator ops
        assert all(c.split(" (")[1].startswith(("QLinearConv", "QLinearMatMul")) for c in consts)
    else:
        assert consts == []
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1


def test_the_float_check_can_fail(models):
    """A QDQ graph computes in float between its quantizers, and the walker says so."""
    found = float_tensors_inside(export_model(models["int8"], "qdq", 21))
    assert any("(Conv)" in f for f in found) and any("(Gemm)" in f for f in found)


def test_forms_use_the_operators_they_promise(exported):
    ops = {k: {n.op_type for n in m.graph.node} for k, m in exported.items()}
    assert {"ConvInteger", "MatMulInteger", "Mod", "Div"} <= ops[("int8", "integer")]
    assert {"QLinearConv", "QLinearMatMul"} & ops[("int8", "qoperator")]
    assert "QLinearConv" in ops[("int8", "qoperator")]
    assert {"BinaryConv2d", "BinaryGemm"} <= ops[("bnn", "packed")]
    assert {"TernaryConv2d", "TernaryGemm"} <= ops[("ternary", "packed")]
    assert ops[("int8", "packed")] == ops[("int8", "integer")]  # nothing to pack
    bnn = exported[("bnn", "packed")]
    assert {f.name for f in bnn.functions} == {"BinaryConv2d", "BinaryGemm"}
    assert all(f.domain == DOMAIN for f in bnn.functions)
    assert {(o.domain, o.version) for o in bnn.opset_import} == {("", 21), (DOMAIN, 1)}


def test_int4_weights_are_stored_as_int4(exported):
    m = exported[("int4", "integer")]
    types = {i.name: i.data_type for i in m.graph.initializer}
    assert sum(t == onnx.TensorProto.INT4 for t in types.values()) == 4  # conv1, conv2, fc1, fc2


def test_packed_binary_weights_take_at_most_1_28_of_float(models, exported):
    m = exported[("bnn", "packed")]
    packed = {i.name: i for i in m.graph.initializer if i.name.endswith("_w_packed")}
    binary = {n: l for n, l in models["bnn"].named_modules() if getattr(getattr(l, "w_q", None), "bits", None) == "binary"}
    assert {f"{n}_w_packed" for n in binary} == set(packed)
    for name, layer in binary.items():
        t = packed[f"{name}_w_packed"]
        assert t.data_type == onnx.TensorProto.UINT8
        assert len(t.raw_data) * 28 <= 4 * layer.weight.numel()


@pytest.mark.parametrize("opset", [18, 23])
def test_other_opsets(models, digits_data, opset):
    x = digits_data[0][:40]
    for key, fmt in (("int4", "integer"), ("bnn", "packed"), ("int8", "qoperator")):
        m = export_model(models[key], fmt, opset)
        onnx.checker.check_model(m, full_check=True)
        assert_bit_equal(run_ort(m, x), run_ref(m, x))
