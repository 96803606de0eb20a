"""compile/layout.py: transposes moved forward through elementwise ops and reductions cancel, and
the rewritten function computes the same values (built and run on the host)."""
from __future__ import annotations

import numpy as np

from robustq_deploy.compile.layout import TO_NCHW, TO_NHWC, sink_transposes


def module():
    """``x`` (NHWC) -> NCHW -> * per-channel constant, + scalar, clip -> back to NHWC, a 2x2 max
    pooling of it back to NHWC, its channel concatenation with an earlier value back to NHWC, and
    the spatial mean of the NCHW tensor; plus a transpose the pass
    must keep (a matmul reads it)."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 4, 6, 3], "float32"))
    scale = np.array([0.5, -2.0, 3.0], np.float32).reshape(1, 3, 1, 1)
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.permute_dims(x, list(TO_NCHW)))
            b = bb.emit(relax.op.multiply(a, relax.const(scale)))
            c = bb.emit(relax.op.add(b, relax.const(np.float32(0.25))))
            d = bb.emit(relax.op.clip(c, 0.0, 2.0))
            back = bb.emit(relax.op.permute_dims(d, list(TO_NHWC)))
            pooled = bb.emit(relax.op.nn.max_pool2d(d, (2, 2), (2, 2)))
            pooled_back = bb.emit(relax.op.permute_dims(pooled, list(TO_NHWC)))
            joined = bb.emit(relax.op.concat([d, c], axis=1))
            joined_back = bb.emit(relax.op.permute_dims(joined, list(TO_NHWC)))
            mean = bb.emit(relax.op.mean(d, [2, 3], keepdims=True))
            kept = bb.emit(relax.op.matmul(d, relax.const(np.ones((6, 2), np.float32))))
            out = bb.emit_output(relax.Tuple([back, pooled_back, joined_back, mean, kept]))
        bb.emit_func_output(out)
    return tvm.IRModule(bb.get().functions)


def run(mod, x):
    import tvm
    from tvm import relax

    ex = tvm.compile(mod, target="llvm")
    res = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
    return [r.numpy() for r in res]


def test_transposes_cancel_and_values_are_unchanged():
    mod = module()
    new = sink_transposes(mod)
    text = str(new["main"])
    # the pairs around the elementwise chain, the pooling and the channel concatenation cancelled; the mean got NHWC axes;
    # the matmul's operand still needs NCHW (one transpose left, emitted after the chain)
    assert text.count("R.permute_dims(") == 2, text
    assert "axis=[1, 2]" in text and 'layout="NHWC"' in text and "axis=3" in text, text
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, 6, 3)).astype(np.float32)
    for got, want in zip(run(new, x), run(mod, x)):
        np.testing.assert_array_equal(got, want)
