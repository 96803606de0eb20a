"""ONNX's own conformance cases (``onnx.backend.test.case.node``) through the project's TVM path.

Every case of QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearConv,
QLinearMatMul, ConvInteger and MatMulInteger that the installed ``onnx`` generates is compiled for
this machine's x86 target and run; outputs must equal the expected outputs exactly (dtype and
bits). Scales and zero points are bound as initializers, as in real models; data inputs (and
weights) stay inputs. Cases with types no target runs as integer code (float8, float4, 2-bit)
are listed by name below and must be refused with a one-line error naming the type (each one
and its reason is listed at the end of the pytest run, see ``conftest.py``); every other case
must compile and match. A few representative cases also run on aarch64 (qemu).
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from robustq_deploy.compile.dtypes import REFUSED, type_name
from robustq_deploy.errors import UnsupportedError

from .helpers import Compiled, assert_bit_equal, compile_artifact, require_qemu

OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
       "ConvInteger", "MatMulInteger")
# Inputs that are quantization parameters (bound as initializers), per op.
QPARAMS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "DynamicQuantizeLinear": (),
           "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearMatMul": (1, 2, 4, 5, 6, 7), "ConvInteger": (2, 3),
           "MatMulInteger": (2, 3)}
REFUSAL_REASONS = tuple(set(REFUSED.values()))
QEMU_CASES = ("test_qlinearconv", "test_quantizelinear_int4", "test_dequantizelinear_blocked",
              "test_qlinearmatmul_3D_int8_float32", "test_dynamicquantizelinear")


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    keys = {op.lower() for op in OPS}
    return sorted((c for c in cases if any(c.name[len("test_"):].startswith(k) for k in keys)), key=lambda c: c.name)


CASES = {c.name: c for c in _cases()}
# Element types no target computes as integers: these cases must be refused, all others must run.
REFUSED_TYPES = ("e4m3fn", "e5m2", "float4e2m1", "int2", "uint2")
REFUSED_CASES = sorted(n for n in CASES if any(f"_{t}" in n for t in REFUSED_TYPES))
RUN_CASES = sorted(n for n in CASES if n not in REFUSED_CASES)
REFUSALS: dict[str, str] = {}  # case -> the compiler's refusal, printed in the run's summary


def _array(v) -> np.ndarray:
    return numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)


def bound_case(case) -> tuple[onnx.ModelProto, list[np.ndarray], list[np.ndarray]]:
    """The case's model with its quantization parameters bound as initializers; data inputs and
    expected outputs."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    qparam_names = set()
    for node in m.graph.node:
        for i in QPARAMS.get(node.op_type, ()):
            if i < len(node.input) and node.input[i]:
                qparam_names.add(node.input[i])
    data = []
    for vi, value in zip(m.graph.input, inputs):
        if vi.name in qparam_names:
            if isinstance(value, onnx.TensorProto):
                t = onnx.TensorProto()
                t.CopyFrom(value)
                t.name = vi.name
            else:
                t = numpy_helper.from_array(np.asarray(value), vi.name)
            m.graph.initializer.append(t)
        else:
            data.append(_array(value))
    keep = [vi for vi in m.graph.input if vi.name not in qparam_names]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    return m, data, [_array(o) for o in outputs]


def test_the_cases_are_collected():
    # The conformance suite must not silently shrink (onnx 1.23: 47 cases of these ops).
    assert len(CASES) >= 40
    assert {op for op in OPS if any(op.lower() in n for n in CASES)} == set(OPS)


@pytest.mark.parametrize("name", RUN_CASES)
def test_node_case_x86(name):
    model, data, expected = bound_case(CASES[name])
    compiled = Compiled(model, source=name)
    outs = compiled(*data)
    assert len(outs) == len(expected)
    for got, want in zip(outs, expected):
        assert_bit_equal(got, want)
    assert compiled.meta["float_compute"] == []


@pytest.mark.parametrize("name", REFUSED_CASES)
def test_node_case_refused(name):
    model, _, _ = bound_case(CASES[name])
    with pytest.raises(UnsupportedError) as info:
        Compiled(model, source=name)
    msg = str(info.value)
    assert "\n" not in msg and any(r in msg for r in REFUSAL_REASONS), msg
    REFUSALS[name] = msg


@pytest.mark.qemu
@pytest.mark.parametrize("name", QEMU_CASES)
def test_node_case_aarch64(name, tmp_path):
    require_qemu()
    model, data, expected = bound_case(CASES[name])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    lib = compile_artifact(path, "aarch64", tmp_path)
    from robustq_deploy.runtime import load

    runner = load(lib)
    outs = runner(**dict(zip(runner.input_names, data)))
    for got, want in zip(outs.values(), expected):
        assert_bit_equal(got, want)


def test_refusals_name_the_type():
    reasons = {type_name(t): r for t, r in REFUSED.items()}
    assert "float8" in reasons["float8e4m3fn"] and "2-bit" in reasons["int2"] and "float4" in reasons["float4e2m1"]
