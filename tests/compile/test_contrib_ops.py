"""onnxruntime's com.microsoft QLinearAdd and QGemm against onnxruntime itself, bit for bit,
on random integer data (the forms its quantizer emits, plus the variants the converters allow)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from .helpers import Compiled, assert_bit_equal

MS = "com.microsoft"


def _model(node, inputs, outputs, inits):
    g = helper.make_graph(node if isinstance(node, list) else [node], "g", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize("b_shape", [[2, 3, 5, 5], [1]])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_add(dtype, b_shape):
    rng = np.random.default_rng(0)
    t = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    info = np.iinfo(dtype)
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("sa", 0.031), ("sb", 0.017), ("sc", 0.043))]
    inits += [numpy_helper.from_array(np.array(z, dtype), n) for n, z in (("za", 3), ("zb", -2 if dtype == np.int8 else 200),
                                                                           ("zc", 7))]
    node = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"], domain=MS)
    m = _model(node, [helper.make_tensor_value_info("a", t, [2, 3, 5, 5]), helper.make_tensor_value_info("b", t, b_shape)],
               [helper.make_tensor_value_info("c", t, [2, 3, 5, 5])], inits)
    a = rng.integers(info.min, info.max + 1, (2, 3, 5, 5)).astype(dtype)
    b = rng.integers(info.min, info.max + 1, b_shape).astype(dtype)
    (got,) = Compiled(m)(a, b)
    assert_bit_equal(got, _ort(m, {"a": a, "b": b}))


@pytest.mark.parametrize("quantized_output", [True, False])
def test_qgemm(quantized_output):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (6, 20)).astype(np.uint8)
    w = rng.integers(-127, 128, (9, 20)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.02, np.float32), "sa"),
             numpy_helper.from_array(np.array(5, np.uint8), "za"),
             numpy_helper.from_array(rng.uniform(1e-3, 3e-3, 9).astype(np.float32), "sw"),
             numpy_helper.from_array(np.zeros(9, np.int8), "zw"),
             numpy_helper.from_array(rng.integers(-5000, 5000, 9).astype(np.int32), "c")]
    ins = ["a", "sa", "za", "w", "sw", "zw", "c"]
    out_t = TensorProto.FLOAT
    if quantized_output:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "sy"), numpy_helper.from_array(np.array(9, np.uint8), "zy")]
        ins += ["sy", "zy"]
        out_t = TensorProto.UINT8
    node = helper.make_node("QGemm", ins, ["y"], domain=MS, transB=1, alpha=0.75)
    m = _model(node, [helper.make_tensor_value_info("a", TensorProto.UINT8, [6, 20])],
               [helper.make_tensor_value_info("y", out_t, [6, 9])], inits)
    onnx.checker.check_model(m)
    (got,) = Compiled(m)(a)
    assert_bit_equal(got, _ort(m, {"a": a}))


def _qdq_add_model(n: int, sa, za, sb, zb, sc, zc):
    """A residual add as onnxruntime's QDQ quantizer writes it: DQ(a), DQ(b) -> Add -> Q."""
    u8 = TensorProto.UINT8
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("sa", sa), ("sb", sb), ("sc", sc))]
    inits += [numpy_helper.from_array(np.array(v, np.uint8), k) for k, v in (("za", za), ("zb", zb), ("zc", zc))]
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["af"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"]),
             helper.make_node("Add", ["af", "bf"], ["cf"], name="residual"),
             helper.make_node("QuantizeLinear", ["cf", "sc", "zc"], ["c"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, u8, [1, n]) for k in "ab"],
                          [helper.make_tensor_value_info("c", u8, [1, n])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_qdq_residual_add_matches_onnxruntime_at_a_near_tie():
    """onnxruntime fuses DQ, DQ -> Add -> Q into QLinearAdd and computes MLAS's formula; the
    compile rewrites the same pattern into the same op. The scales are those of a residual add of
    an onnxruntime-quantized ResNet-18 where (200 - 138) * sa + 122 * sb is 155.5 output steps in
    MLAS's order of operations and 155.49998 in a float add then QuantizeLinear; every pair of
    inputs is tried."""
    from robustq_deploy.compile import prepare

    m = _qdq_add_model(256 * 256, 0.0026323937, 138, 0.0059577855, 0, 0.0057238475, 0)
    assert prepare(m).rewrites["qdq"]["qlinear_adds"] == ["residual"]
    a, b = (v.reshape(1, -1).astype(np.uint8) for v in np.meshgrid(np.arange(256), np.arange(256)))  # every pair
    (got,) = Compiled(m)(a, b)
    assert_bit_equal(got, _ort(m, {"a": a, "b": b}))


def test_qdq_add_with_types_that_differ_stays_float():
    """onnxruntime's QLinearAdd needs one 8-bit type on both inputs and the output; a pattern
    with an int8 output is left to the float path (as onnxruntime leaves it)."""
    from robustq_deploy.compile import prepare

    m = _qdq_add_model(8, 0.01, 3, 0.02, 5, 0.03, 0)
    zc = next(t for t in m.graph.initializer if t.name == "zc")
    zc.CopyFrom(numpy_helper.from_array(np.array(0, np.int8), "zc"))
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT8
    assert prepare(m).rewrites["qdq"]["qlinear_adds"] == []


# ---- com.microsoft QOperator ops of robustq_deploy/compile/ops/contrib.py -------------------------

_NP = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def _qparam_inits(dtype, **params):
    """Scale (float32) and zero point (``dtype``) initializers by name: ``sx=0.02, zx=3``."""
    return [numpy_helper.from_array(np.array(v, np.float32 if k.startswith("s") else dtype), k)
            for k, v in params.items()]


def _random(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _images_with_every_sum(dtype, pixels: int) -> np.ndarray:
    """[C, pixels] images whose sums run over every value 8-bit pixels can sum to."""
    info = np.iinfo(dtype)
    sums = np.arange(0, (info.max - info.min) * pixels + 1)
    base, rem = sums // pixels, sums % pixels
    x = base[:, None] + (np.arange(pixels)[None, :] < rem[:, None])
    return (x + info.min).astype(dtype)


@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_global_average_pool(dtype, channels_last):
    """Every sum a 4x4 image can have (one channel per sum), with scales that make exact .5
    steps (x_scale / (16 y_scale) = 1/8) and scales that do not; then random NCHW / NHWC
    images of other shapes (1-D and 2-D spatial)."""
    rng = np.random.default_rng(2)
    t = _NP[dtype]
    zx, zy = (3, -7) if dtype == np.int8 else (131, 9)
    every = _images_with_every_sum(dtype, 16)  # [C, 16]
    cases = [(every.T.reshape(1, 4, 4, -1) if channels_last else every.reshape(1, -1, 4, 4), sx, sy)
             for sx, sy in ((0.5, 0.25), (0.0371, 0.0043))]
    for shape, sx, sy in (((3, 5, 7, 9), 0.031, 0.029), ((1, 3, 16), 0.013, 0.0117)):
        xshape = (shape[0],) + shape[2:] + (shape[1],) if channels_last else shape
        cases.append((_random(rng, dtype, xshape), sx, sy))
    models = []
    for x, sx, sy in cases:
        xshape = list(x.shape)
        spatial = range(1, x.ndim - 1) if channels_last else range(2, x.ndim)
        yshape = [1 if i in spatial else d for i, d in enumerate(xshape)]
        node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS,
                                channels_last=channels_last, name="gap")
        models.append((_model(node, [helper.make_tensor_value_info("x", t, xshape)],
                              [helper.make_tensor_value_info("y", t, yshape)],
                              _qparam_inits(dtype, sx=sx, zx=zx, sy=sy, zy=zy)), [x]))
    _check_side_by_side(models)


def test_qlinear_global_average_pool_refuses_out_of_range_scale():
    from robustq_deploy.errors import UnsupportedError

    node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, name="gap")
    m = _model(node, [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 2, 2])],
               [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 2, 1, 1])],
               _qparam_inits(np.uint8, sx=1000.0, zx=0, sy=0.001, zy=0))
    with pytest.raises(UnsupportedError, match="QLinearGlobalAveragePool 'gap'.*range"):
        Compiled(m)


def _side_by_side(models: list) -> onnx.ModelProto:
    """One model running the single-node ``models`` side by side (names suffixed by index), so a
    test compiles once."""
    nodes, ins, outs, inits = [], [], [], []
    for i, m in enumerate(models):
        def ren(n, i=i):
            return f"{n}_{i}" if n else n

        for n in m.graph.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.input[:] = [ren(v) for v in n.input]
            c.output[:] = [ren(v) for v in n.output]
            c.name = ren(n.name)
            nodes.append(c)
        for src, dst in ((m.graph.input, ins), (m.graph.output, outs), (m.graph.initializer, inits)):
            for v in src:
                c = type(v)()
                c.CopyFrom(v)
                c.name = ren(v.name)
                dst.append(c)
    return _model(nodes, ins, outs, inits)


def _check_side_by_side(cases: list) -> None:
    """``cases``: (single-node model, its input arrays in order); one compile for all of them,
    every output bit-equal to onnxruntime's."""
    m = _side_by_side([c[0] for c in cases])
    arrays = [a for _, xs in cases for a in xs]
    got = Compiled(m)(*arrays)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {i.name: a for i, a in zip(m.graph.input, arrays)})
    assert len(got) == len(want) == len(cases)
    for g, w in zip(got, want):
        assert_bit_equal(g, w)


def _every_byte(dtype) -> np.ndarray:
    return np.arange(256, dtype=np.uint8).view(dtype)


def _unary_model(op, dtype, shape, qparams, **attrs):
    t = _NP[dtype]
    node = helper.make_node(op, ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, name="act", **attrs)
    return _model(node, [helper.make_tensor_value_info("x", t, shape)], [helper.make_tensor_value_info("y", t, shape)],
                  _qparam_inits(dtype, **qparams))


_UNARY_QPARAMS = [{"sx": 0.05, "zx": 0, "sy": 1 / 256, "zy": 0}, {"sx": 0.0371, "zx": 17, "sy": 0.0043, "zy": -20},
                  {"sx": 0.125, "zx": -3, "sy": 0.0078125, "zy": 100}]


@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.1}),
                                      ("QLinearLeakyRelu", {})])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_table_activations(op, attrs, dtype):
    """Every one of the 256 input values, for several quantization parameters (zero points
    clipped to the grid)."""
    info = np.iinfo(dtype)
    cases = []
    for qp in _UNARY_QPARAMS:
        qp = {k: (int(np.clip(v, info.min, info.max)) if k.startswith("z") else v) for k, v in qp.items()}
        cases.append((_unary_model(op, dtype, [2, 128], qp, **attrs), [_every_byte(dtype).reshape(2, 128)]))
    _check_side_by_side(cases)


def test_mlas_logistic_is_the_fma_kernel():
    """The table's logistic equals onnxruntime's float Sigmoid (the same MLAS kernel) on every
    float32 in [-20, 20] step 2^-10 and on random floats."""
    from robustq_deploy.compile.ops.contrib import mlas_logistic

    x = np.concatenate([np.arange(-20 * 1024, 20 * 1024 + 1) / np.float32(1024),
                        np.random.default_rng(3).standard_normal(50000) * 6]).astype(np.float32)
    x = x[: len(x) // 8 * 8]  # onnxruntime's Sigmoid runs the 8-wide loop on all of it
    node = helper.make_node("Sigmoid", ["x"], ["y"])
    m = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(x)])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(x)])], [])
    assert_bit_equal(mlas_logistic(x), _ort(m, {"x": x}))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_concat(dtype):
    """Three inputs on axis 1: one already on the output grid (copied) and two requantized
    through the identity table, each holding all 256 values."""
    t = _NP[dtype]
    info = np.iinfo(dtype)
    zs = (5, -9, 100) if dtype == np.int8 else (5, 200, 128)
    qp = {"sy": 0.031, "zy": zs[0], "s0": 0.031, "z0": zs[0], "s1": 0.0437, "z1": zs[1], "s2": 0.0155, "z2": zs[2]}
    ins = ["sy", "zy", "x0", "s0", "z0", "x1", "s1", "z1", "x2", "s2", "z2"]
    node = helper.make_node("QLinearConcat", ins, ["y"], domain=MS, axis=1, name="cat")
    m = _model(node, [helper.make_tensor_value_info(f"x{i}", t, [2, 128 * (i + 1)]) for i in range(3)],
               [helper.make_tensor_value_info("y", t, [2, 768])], _qparam_inits(dtype, **qp))
    xs = [np.tile(_every_byte(dtype).reshape(2, 128), (1, i + 1)) for i in range(3)]
    xs[2] = np.roll(xs[2], 7)
    assert info.min in xs[1]
    (got,) = Compiled(m)(*xs)
    assert_bit_equal(got, _ort(m, dict(zip(("x0", "x1", "x2"), xs))))


@pytest.mark.parametrize("b_shape", [[256, 256], [1], [256, 1]])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_mul(dtype, b_shape):
    """Every pair of 8-bit values (a [256, 256] grid against b), with scales whose ratio makes
    exact .5 steps (0.5) and one that does not."""
    t = _NP[dtype]
    a = np.repeat(_every_byte(dtype).reshape(256, 1), 256, axis=1)
    b_full = np.repeat(_every_byte(dtype).reshape(1, 256), 256, axis=0)
    b = {(256, 256): b_full, (1,): np.array([_every_byte(dtype)[77]]), (256, 1): _every_byte(dtype).reshape(256, 1)}[
        tuple(b_shape)]
    zs = (3, -2, 7) if dtype == np.int8 else (3, 200, 7)
    cases = []
    for sa, sb, sc in ((0.5, 0.5, 0.5), (0.031, 0.017, 0.043)):
        qp = {"sa": sa, "za": zs[0], "sb": sb, "zb": zs[1], "sc": sc, "zc": zs[2]}
        node = helper.make_node("QLinearMul", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"], domain=MS,
                                name="mul")
        cases.append((_model(node, [helper.make_tensor_value_info("a", t, [256, 256]),
                                    helper.make_tensor_value_info("b", t, b_shape)],
                             [helper.make_tensor_value_info("c", t, [256, 256])], _qparam_inits(dtype, **qp)), [a, b]))
    _check_side_by_side(cases)


@pytest.mark.parametrize("op", ["QLinearSigmoid", "QLinearLeakyRelu", "QLinearMul", "QLinearConcat",
                                "QLinearGlobalAveragePool"])
def test_contrib_op_refuses_run_time_scales(op):
    """Scales that are graph inputs (not constants) are refused with a one-line error naming
    the node (onnxruntime's quantizer always writes them as initializers)."""
    from robustq_deploy.errors import UnsupportedError

    u8 = TensorProto.UINT8
    ins = {"QLinearMul": ["a", "s", "z", "a", "s", "z", "s", "z"], "QLinearConcat": ["s", "z", "a", "s", "z"]}.get(
        op, ["a", "s", "z", "s", "z"])
    node = helper.make_node(op, ins, ["y"], domain=MS, name="n1", axis=1) if op == "QLinearConcat" else \
        helper.make_node(op, ins, ["y"], domain=MS, name="n1")
    shape = [1, 2, 2, 2]
    m = _model(node, [helper.make_tensor_value_info("a", u8, shape), helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
               [helper.make_tensor_value_info("y", u8, None)], [numpy_helper.from_array(np.array(1, np.uint8), "z")])
    with pytest.raises(UnsupportedError, match=f"{op} 'n1'.*constant scalar") as err:
        Compiled(m)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_average_pool(dtype, channels_last):
    """2-D windows with and without padding (count_include_pad 0 and 1), strides, a 1-D pool,
    and a whole-image window (onnxruntime's global-average path); in each batch two random
    images and two of few distinct values, where float sums tie most often."""
    rng = np.random.default_rng(4)
    t = _NP[dtype]
    info = np.iinfo(dtype)
    zx, zy = (-5, 3) if dtype == np.int8 else (128, 10)
    cases = [((4, 3, 9, 11), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, (0.05, 0.05)),
             ((4, 3, 9, 11), {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 2, 1], "count_include_pad": 1},
              (0.0371, 0.0043)),
             ((4, 3, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}, (0.25, 0.125)),
             ((4, 4, 6, 5), {"kernel_shape": [6, 5]}, (0.031, 0.029)),
             ((4, 3, 12), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}, (0.0371, 0.0123))]
    models = []
    for shape, attrs, (sx, sy) in cases:
        xshape = (shape[0],) + shape[2:] + (shape[1],) if channels_last else shape
        node = helper.make_node("QLinearAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS,
                                channels_last=channels_last, name="pool", **attrs)
        m = _model(node, [helper.make_tensor_value_info("x", t, xshape)], [helper.make_tensor_value_info("y", t, None)],
                   _qparam_inits(dtype, sx=sx, zx=zx, sy=sy, zy=zy))
        few = np.array([info.min, zx - 1, zx, zx + 1, info.max], dtype)
        half = (2,) + tuple(xshape[1:])
        models.append((m, [np.concatenate([_random(rng, dtype, half), rng.choice(few, half)])]))
    _check_side_by_side(models)


def test_dynamic_quantize_linear():
    """onnxruntime's DynamicQuantizeLinear (scale, zero point and data) on inputs that are all
    zero (scale 1.0), all positive, all negative, mixed, and ranges whose zero point is an
    exact .5 before rounding."""
    rng = np.random.default_rng(6)
    xs = [np.zeros((4, 8), np.float32), rng.uniform(0.1, 3, (4, 8)), -rng.uniform(0.1, 3, (4, 8)),
          rng.standard_normal((4, 8)) * 2]
    for lo, hi in ((-1.0, 101.0), (-3.0, 7.2), (-0.5, 0.5)):  # 255 * lo / (lo - hi) = k + 0.5 (or near)
        x = rng.uniform(lo, hi, (4, 8))
        x[0, 0], x[0, 1] = lo, hi
        xs.append(x)
    cases = []
    for x in xs:
        node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"], name="dql")
        m = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.UINT8, [4, 8]),
                    helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                    helper.make_tensor_value_info("z", TensorProto.UINT8, [])], [])
        cases.append((m, [x.astype(np.float32)]))
    m = _side_by_side([c[0] for c in cases])
    arrays = [c[1][0] for c in cases]
    got = Compiled(m)(*arrays)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {i.name: a for i, a in zip(m.graph.input, arrays)})
    for g, w in zip(got, want):
        assert_bit_equal(g, w)


def _float_model(kind: str, rng) -> onnx.ModelProto:
    """A small float MLP (MatMul, Add, Relu) or CNN (Conv, Relu, Conv, GlobalAveragePool, Flatten,
    MatMul) with seeded weights."""
    f = TensorProto.FLOAT

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    if kind == "mlp":
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["h2"]),
                 helper.make_node("Relu", ["h2"], ["h3"]), helper.make_node("MatMul", ["h3", "w2"], ["h4"]),
                 helper.make_node("Add", ["h4", "b2"], ["y"])]
        inits = [w("w1", 20, 32), w("b1", 32), w("w2", 32, 10), w("b2", 10)]
        x_shape = [None, 20]
    else:
        nodes = [helper.make_node("Conv", ["x", "c1", "cb1"], ["h1"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["h1"], ["h2"]),
                 helper.make_node("Conv", ["h2", "c2"], ["h3"], strides=[2, 2]),
                 helper.make_node("Relu", ["h3"], ["h4"]), helper.make_node("GlobalAveragePool", ["h4"], ["h5"]),
                 helper.make_node("Flatten", ["h5"], ["h6"]), helper.make_node("MatMul", ["h6", "w3"], ["y"])]
        inits = [w("c1", 8, 1, 3, 3), w("cb1", 8), w("c2", 16, 8, 3, 3), w("w3", 16, 10)]
        x_shape = [None, 1, 12, 12]
    g = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", f, x_shape)],
                          [helper.make_tensor_value_info("y", f, [None, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_quantize_dynamic_models_match_onnxruntime(kind, tmp_path):
    """``quantize_dynamic`` (DynamicQuantizeLinear + MatMulInteger / ConvInteger) of a small MLP
    and CNN, end to end: the compiled module equals onnxruntime on the same file, bit for bit."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(7)
    src, dst = tmp_path / f"{kind}.onnx", tmp_path / f"{kind}.dyn.onnx"
    onnx.save(_float_model(kind, rng), str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8 if kind == "cnn" else QuantType.QInt8)
    m = onnx.load(str(dst))
    ops = {n.op_type for n in m.graph.node}
    assert "DynamicQuantizeLinear" in ops and ({"ConvInteger"} if kind == "cnn" else {"MatMulInteger"}) <= ops
    x = (rng.standard_normal([16, 20] if kind == "mlp" else [16, 1, 12, 12]) * 1.5).astype(np.float32)
    (got,) = Compiled(m, source="dynamic")(x)
    assert_bit_equal(got, _ort(m, {"x": x}))


@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
def test_qgemm_variants(a_dtype):
    """QGemm as onnxruntime's kernels take it: transA and transB, alpha, per-column weight
    scales and zero points, bias shapes (N,), (1, N), (M, 1) and (M, N), quantized and float
    output; uint8 or int8 activations (int8 ones need int8 weights)."""
    rng = np.random.default_rng(8)
    ta = _NP[a_dtype]

    def z(v):
        return np.array(v, a_dtype)

    cases = []
    for i, (trans_a, trans_b, alpha, c_shape, per_col, y) in enumerate((
            (0, 1, 1.0, [9], True, True), (1, 0, 0.75, [1, 9], False, True), (1, 1, 2.5, [6, 1], True, False),
            (0, 0, 1.0, [6, 9], False, False))):
        a_shape = [20, 6] if trans_a else [6, 20]
        b_shape = [9, 20] if trans_b else [20, 9]
        w = rng.integers(-127, 128, b_shape).astype(np.int8)
        wz = rng.integers(-3, 4, 9).astype(np.int8) if per_col else np.array(0, np.int8)
        ws = rng.uniform(1e-3, 3e-3, 9).astype(np.float32) if per_col else np.array(2e-3, np.float32)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.02, np.float32), "sa"),
                 numpy_helper.from_array(z(5 if a_dtype == np.uint8 else -4), "za"), numpy_helper.from_array(ws, "sw"),
                 numpy_helper.from_array(wz, "zw"),
                 numpy_helper.from_array(rng.integers(-5000, 5000, c_shape).astype(np.int32), "c")]
        ins = ["a", "sa", "za", "w", "sw", "zw", "c"]
        out_t = TensorProto.FLOAT
        if y:
            inits += [numpy_helper.from_array(np.array(0.05, np.float32), "sy"),
                      numpy_helper.from_array(z(9 if a_dtype == np.uint8 else -2), "zy")]
            ins += ["sy", "zy"]
            out_t = ta
        node = helper.make_node("QGemm", ins, ["y"], domain=MS, transA=trans_a, transB=trans_b, alpha=alpha,
                                name=f"gemm{i}")
        m = _model(node, [helper.make_tensor_value_info("a", ta, a_shape)], [helper.make_tensor_value_info("y", out_t, [6, 9])],
                   inits)
        cases.append((m, [_random(rng, a_dtype, a_shape)]))
    _check_side_by_side(cases)


def test_qgemm_refuses_y_scale_without_zero_point():
    from robustq_deploy.errors import UnsupportedError

    u8 = TensorProto.UINT8
    inits = [numpy_helper.from_array(np.ones((3, 4), np.uint8), "w"), numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(1, np.uint8), "z")]
    node = helper.make_node("QGemm", ["a", "s", "z", "w", "s", "z", "", "s"], ["y"], domain=MS, name="g1")
    m = _model(node, [helper.make_tensor_value_info("a", u8, [2, 3])], [helper.make_tensor_value_info("y", u8, [2, 4])],
               inits)
    with pytest.raises(UnsupportedError, match="QGemm 'g1'.*y_scale and y_zero_point") as err:
        Compiled(m)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("attrs,reason", [({"ceil_mode": 1}, "ceil_mode=1"), ({"auto_pad": "SAME_UPPER"}, "auto_pad SAME_UPPER")])
def test_qlinear_average_pool_refusals(attrs, reason):
    from robustq_deploy.errors import UnsupportedError

    node = helper.make_node("QLinearAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, name="pool",
                            kernel_shape=[2, 2], **attrs)
    m = _model(node, [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 5, 5])],
               [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
               _qparam_inits(np.uint8, sx=0.1, zx=0, sy=0.1, zy=0))
    with pytest.raises(UnsupportedError, match=f"QLinearAveragePool 'pool': {reason}") as err:
        Compiled(m)
    assert "\n" not in str(err.value)


def test_dynamic_quantize_linear_refuses_non_float32_input():
    from robustq_deploy.errors import UnsupportedError

    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"], name="dql")
    m = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4])],
               [helper.make_tensor_value_info("y", TensorProto.UINT8, [4]), helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                helper.make_tensor_value_info("z", TensorProto.UINT8, [])], [])
    with pytest.raises(UnsupportedError, match="DynamicQuantizeLinear 'dql': input must be float32") as err:
        Compiled(m)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("op", ["QLinearSigmoid", "QLinearLeakyRelu"])
def test_omitted_zero_points_are_zero(op):
    """The zero points of the table ops are optional inputs; omitted, they are 0 (as onnxruntime)."""
    t = TensorProto.INT8
    shape = [2, 128]
    node = helper.make_node(op, ["x", "sx", "", "sy", ""], ["y"], domain=MS, name="n")
    m = _model(node, [helper.make_tensor_value_info("x", t, shape)], [helper.make_tensor_value_info("y", t, shape)],
               _qparam_inits(np.int8, sx=0.05, sy=0.02))
    x = _every_byte(np.int8).reshape(shape)
    (got,) = Compiled(m)(x)
    assert_bit_equal(got, _ort(m, {"x": x}))


# ---- QLinearSoftmax --------------------------------------------------------------------------

def _softmax_reference(x: np.ndarray, x_scale, y_scale, y_zp, order: str = "index") -> np.ndarray:
    """onnxruntime's QLinearSoftmax on rows (last axis) in numpy: the table read at
    ``255 - (max - x)``, the row summed in float32 (``order``: "index" as the kernel does, or
    "reverse" and "pairwise" for the orders a vectorized sum would take), the rescale in double."""
    from robustq_deploy.mlas import qlinear_softmax_table

    info = np.iinfo(x.dtype)
    d = x.shape[-1]
    xi = x.astype(np.int64)
    e = qlinear_softmax_table(x_scale, d)[255 - (xi.max(-1, keepdims=True) - xi)]
    cols = {"index": range(d), "reverse": reversed(range(d))}.get(order)
    if cols is None:
        total = e.sum(-1, dtype=np.float32)  # numpy's pairwise float32 sum
    else:
        total = np.zeros(e.shape[:-1], np.float32)
        for k in cols:
            total = (total + e[..., k]).astype(np.float32)
    ys = float(np.floor(np.float32(1.0) / np.float32(y_scale)))
    q = np.rint(e.astype(np.float64) * ys / total[..., None].astype(np.float64)) + y_zp
    return np.clip(q, info.min, info.max).astype(x.dtype)


def _softmax_rows_that_tell_sum_orders_apart(dtype, d: int, x_scale, y_zp, rows: int = 400000):
    """Rows (largest value at the top of the grid) on which the float32 sum in index order gives
    another result than a reversed or pairwise sum: rows at a rounding tie of the last step."""
    rng = np.random.default_rng(d)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (rows, d)).astype(dtype)
    x[:, 0] = info.max
    ref = _softmax_reference(x, x_scale, 1 / 256, y_zp)
    other = [_softmax_reference(x, x_scale, 1 / 256, y_zp, o) for o in ("reverse", "pairwise")]
    tell = np.nonzero(np.any([(o != ref).any(-1) for o in other], axis=0))[0]
    return x[tell]


def _softmax_model(dtype, shape, qparams, **attrs):
    t = _NP[dtype]
    node = helper.make_node("QLinearSoftmax", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, name="softmax", **attrs)
    return _model(node, [helper.make_tensor_value_info("x", t, shape)], [helper.make_tensor_value_info("y", t, shape)],
                  _qparam_inits(dtype, **qparams))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_softmax_matches_onnxruntime_where_the_sum_order_shows(dtype):
    """The quantizer's form (opset 13, last axis, y_scale 1/256, y_zp 0 or -128) on rows that
    tell a float32 sum in index order apart from reversed and pairwise sums, plus random rows:
    bit-equal to onnxruntime and to the numpy reference in index order."""
    y_zp = -128 if dtype == np.int8 else 0
    cases, refs = [], []
    for d, x_scale in ((10, 0.01), (33, 0.05)):
        tell = _softmax_rows_that_tell_sum_orders_apart(dtype, d, x_scale, y_zp)
        assert len(tell) >= 5, len(tell)  # the check below can tell the orders apart
        x = np.concatenate([tell, _random(np.random.default_rng(1), dtype, (500, d))])
        qp = {"sx": x_scale, "zx": 3, "sy": 1 / 256, "zy": y_zp}
        cases.append((_softmax_model(dtype, ["rows" if d == 10 else len(x), d], qp, axis=-1, opset=13), [x]))
        refs.append(_softmax_reference(x, x_scale, 1 / 256, y_zp))
    m = _side_by_side([c[0] for c in cases])
    arrays = [c[1][0] for c in cases]
    got = Compiled(m)(*arrays)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {i.name: a for i, a in zip(m.graph.input, arrays)})
    for g, w, r in zip(got, want, refs):
        assert_bit_equal(w, r)
        assert_bit_equal(g, w)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_softmax_axes_opsets_and_saturation(dtype):
    """A middle axis at opset 13, the flattened rows of opset 12 from axis 1 and its default axis
    (-1, as at opset 13), a y_scale whose reciprocal is not an integer, and zero points that
    make results saturate."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    x = _random(rng, dtype, (4, 6, 5))
    x[0, :, 0] = info.max  # ties at the top
    zp = (info.min + 200) if dtype == np.uint8 else 100
    cases = [(_softmax_model(dtype, [4, 6, 5], {"sx": 0.03, "zx": 0, "sy": 1 / 256, "zy": 0 if dtype == np.uint8 else -128},
                             axis=1, opset=13), [x]),
             (_softmax_model(dtype, [4, 6, 5], {"sx": 0.2, "zx": 1, "sy": 0.0071, "zy": zp}, axis=1, opset=12), [x]),
             (_softmax_model(dtype, [4, 6, 5], {"sx": 0.2, "zx": 1, "sy": 0.0071, "zy": zp}, opset=12), [x]),
             (_softmax_model(dtype, [4, 6, 5], {"sx": 0.011, "zx": 0, "sy": 0.0037, "zy": info.min}, axis=-1, opset=13),
              [x])]
    _check_side_by_side(cases)


def test_qlinear_softmax_refuses_a_node_without_opset():
    from robustq_deploy.errors import UnsupportedError

    m = _softmax_model(np.uint8, [2, 10], {"sx": 0.05, "zx": 0, "sy": 1 / 256, "zy": 0}, axis=-1)
    with pytest.raises(UnsupportedError, match="QLinearSoftmax 'softmax'.*opset") as err:
        Compiled(m)
    assert "\n" not in str(err.value)
