"""The integer arithmetic the converters lower to, against its definitions: fixed-point
requantization (robustq_deploy.fixed_point), onnxruntime's float rescale, QuantizeLinear
rounding. One small module per test, seeded inputs including the extremes."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto
from tvm import relax

from robustq_deploy.compile import arith
from robustq_deploy.compile.dtypes import qtype
from robustq_deploy.fixed_point import multiplier_for, requantize

from .helpers import X86, assert_bit_equal


def run(build_body, *arrays):
    bb = relax.BlockBuilder()
    params = [relax.Var(f"a{i}", relax.TensorType(list(a.shape), str(a.dtype))) for i, a in enumerate(arrays)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build_body(bb, *params))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), X86.tvm_target())
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def test_requantize_fixed_is_bit_exact():
    rng = np.random.default_rng(0)
    acc = rng.integers(-2**31, 2**31, (64, 6, 3, 3), dtype=np.int64).astype(np.int32)
    acc[0, :, 0, 0] = [-2**31, 2**31 - 1, 0, -1, 1, 12345]
    acc_scale = rng.uniform(1e-6, 1e-2, 6).astype(np.float32)
    m0, n = multiplier_for(acc_scale, np.float32(0.05))
    want = requantize(acc, m0.reshape(1, 6, 1, 1), n.reshape(1, 6, 1, 1), 3, -127, 127).astype(np.int8)
    got = run(lambda bb, a: arith.requantize_fixed(bb, a, m0.reshape(1, 6, 1, 1), n.reshape(1, 6, 1, 1), 3, -127, 127,
                                                   "int8"), acc)
    assert_bit_equal(got, want)


def test_requantize_float_matches_float32_emulation():
    rng = np.random.default_rng(1)
    acc = rng.integers(-300000, 300000, (4096,), dtype=np.int64).astype(np.int32)
    mult = np.float32(0.0013)
    f = acc.astype(np.float32) * mult  # float32 product, as onnxruntime
    want = np.clip(np.rint(f).astype(np.int64) + 7, 0, 255).astype(np.uint8)
    got = run(lambda bb, a: arith.requantize_float(bb, a, arith.const(mult), arith.const(np.int32(7)), 0, 255, "uint8"), acc)
    assert_bit_equal(got, want)


def test_quantize_rounds_half_to_even_and_saturates_to_the_logical_grid():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 100.0, -100.0, 3.49, np.float32(1e30)], np.float32)
    for t, (lo, hi) in ((TensorProto.INT4, (-8, 7)), (TensorProto.UINT8, (0, 255))):
        qt = qtype(t)
        got = run(lambda bb, a: arith.quantize(bb, a, arith.const(np.float32(1.0)), arith.const(np.int32(0)), qt), x)
        want = np.clip(np.rint(x.astype(np.float64)), lo, hi).astype(qt.storage)
        assert_bit_equal(got, want)


@pytest.mark.parametrize("dtype", ["int64"])
def test_constants_keep_their_dtype(dtype):
    # relax.const(numpy int64) would give int32 and truncate 2**40 to 0; arith.const must not.
    c = arith.const(np.array([2**40], dtype))
    assert str(c.ty.dtype) == dtype and int(c.value.numpy()[0]) == 2**40
    assert arith.const(np.float32(1.0)).ty.shape.values == []  # 0-d stays 0-d
