"""Kernels of standard ONNX operators: integer arithmetic with C semantics, shape ops, and the
few float ops that QDQ graphs need.

Integer arithmetic wraps in the tensor's own width (numpy does the same for same-typed arrays);
integer ``Div`` truncates toward zero as onnxruntime's C++ kernel does; ``Mod`` with ``fmod=0``
takes the sign of the divisor. Float ``Conv``/``Gemm``/``MatMul`` sum in float64 and round once
to float32: they model QDQ graphs closely but are not bit-exact with any runtime (integer graphs
never contain them).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, numpy_helper

from ...errors import UnsupportedError
from .intmath import float_conv2d
from .session import NP_TYPES, OpContext, reference_op


def _same(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype:
        raise UnsupportedError(f"mixed input types {a.dtype} and {b.dtype} (ONNX requires one type)")
    return a, b


@reference_op("Add")
def add(ctx: OpContext, a, b):
    a, b = _same(a, b)
    return np.add(a, b, dtype=a.dtype)


@reference_op("Sub")
def sub(ctx: OpContext, a, b):
    a, b = _same(a, b)
    return np.subtract(a, b, dtype=a.dtype)


@reference_op("Mul")
def mul(ctx: OpContext, a, b):
    a, b = _same(a, b)
    return np.multiply(a, b, dtype=a.dtype)


@reference_op("Div")
def div(ctx: OpContext, a, b):
    a, b = _same(a, b)
    if a.dtype.kind == "f":
        return np.divide(a, b, dtype=a.dtype)
    q = np.floor_divide(a, b)
    # floor -> truncation toward zero: one up where the exact quotient is negative and inexact
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (q + fix.astype(a.dtype)).astype(a.dtype)


@reference_op("Mod")
def mod(ctx: OpContext, a, b):
    a, b = _same(a, b)
    if ctx.attr("fmod", 0) or a.dtype.kind == "f":
        return np.fmod(a, b).astype(a.dtype)
    return np.mod(a, b).astype(a.dtype)


@reference_op("Clip")
def clip(ctx: OpContext, x, lo=None, hi=None):
    y = x
    if lo is not None:
        y = np.maximum(y, lo.astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, hi.astype(x.dtype))
    return y.astype(x.dtype)


@reference_op("Relu")
def relu(ctx: OpContext, x):
    return np.maximum(x, np.zeros((), x.dtype))


@reference_op("Identity")
def identity(ctx: OpContext, x):
    return x


@reference_op("Cast")
def cast(ctx: OpContext, x):
    to = ctx.attr("to")
    if to not in NP_TYPES:
        raise UnsupportedError(f"Cast to ONNX type {to} is not supported by the reference")
    y = np.asarray(x).astype(NP_TYPES[to])
    if to in (TensorProto.INT4, TensorProto.UINT4):  # wrap to 4 bits, as for any narrowing cast
        y = ((y.astype(np.int64) + 8) % 16 - 8) if to == TensorProto.INT4 else (y.astype(np.int64) % 16)
        y = y.astype(NP_TYPES[to])
        ctx.out_types = [to]
    return y


@reference_op("Constant")
def constant(ctx: OpContext):
    v = ctx.attr("value")
    if v is not None:
        return numpy_helper.to_array(v)
    for name, dt in (("value_ints", np.int64), ("value_int", np.int64), ("value_floats", np.float32), ("value_float", np.float32)):
        if name in ctx.attrs:
            return np.asarray(ctx.attrs[name], dt)
    raise UnsupportedError("Constant without a supported value attribute")


@reference_op("Shape")
def shape(ctx: OpContext, x):
    dims = np.asarray(x.shape, np.int64)
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    return dims[start:end]


@reference_op("Reshape")
def reshape(ctx: OpContext, x, shape):
    target = [int(d) for d in shape]
    if not ctx.attr("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


@reference_op("Flatten")
def flatten(ctx: OpContext, x):
    axis = ctx.attr("axis", 1) % max(x.ndim, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@reference_op("Transpose")
def transpose(ctx: OpContext, x):
    return np.transpose(x, ctx.attr("perm"))


@reference_op("Unsqueeze")
def unsqueeze(ctx: OpContext, x, axes):
    rank = x.ndim + len(axes)
    y = x
    for a in sorted(int(v) % rank for v in axes):
        y = np.expand_dims(y, a)
    return y


@reference_op("Squeeze")
def squeeze(ctx: OpContext, x, axes=None):
    return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes))


@reference_op("Concat")
def concat(ctx: OpContext, *xs):
    return np.concatenate(xs, axis=ctx.attr("axis"))


@reference_op("Gather")
def gather(ctx: OpContext, x, idx):
    return np.take(x, idx, axis=ctx.attr("axis", 0))


@reference_op("Slice")
def slice_(ctx: OpContext, x, starts, ends, axes=None, steps=None):
    axes = range(len(starts)) if axes is None else [int(a) % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _reduce_axes(x, axes, ctx) -> tuple[int, ...] | None:
    if axes is None or len(axes) == 0:
        return None if not ctx.attr("noop_with_empty_axes", 0) else ()
    return tuple(int(a) % x.ndim for a in axes)


@reference_op("ReduceSum")
def reduce_sum(ctx: OpContext, x, axes=None):
    ax = _reduce_axes(x, axes, ctx)
    return np.sum(x, axis=ax, keepdims=bool(ctx.attr("keepdims", 1)), dtype=x.dtype)


@reference_op("ReduceProd")
def reduce_prod(ctx: OpContext, x, axes=None):
    ax = _reduce_axes(x, axes, ctx)
    return np.prod(x, axis=ax, keepdims=bool(ctx.attr("keepdims", 1)), dtype=x.dtype)


@reference_op("GreaterOrEqual")
def greater_equal(ctx: OpContext, a, b):
    return np.greater_equal(*_same(a, b))


@reference_op("LessOrEqual")
def less_equal(ctx: OpContext, a, b):
    return np.less_equal(*_same(a, b))


@reference_op("Greater")
def greater(ctx: OpContext, a, b):
    return np.greater(*_same(a, b))


@reference_op("Less")
def less(ctx: OpContext, a, b):
    return np.less(*_same(a, b))


@reference_op("Equal")
def equal(ctx: OpContext, a, b):
    return np.equal(*_same(a, b))


@reference_op("And")
def and_(ctx: OpContext, a, b):
    return np.logical_and(a, b)


@reference_op("Where")
def where(ctx: OpContext, cond, a, b):
    a, b = _same(a, b)
    return np.where(cond, a, b)


@reference_op("BitShift")
def bit_shift(ctx: OpContext, x, s):
    x, s = _same(x, s)
    if x.dtype.kind != "u":
        raise UnsupportedError("BitShift is defined for unsigned types only")
    return (np.right_shift(x, s) if ctx.attr("direction") == "RIGHT" else np.left_shift(x, s)).astype(x.dtype)


@reference_op("BitwiseAnd")
def bitwise_and(ctx: OpContext, a, b):
    return np.bitwise_and(*_same(a, b))


@reference_op("MaxPool")
def max_pool(ctx: OpContext, x):
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise UnsupportedError("MaxPool with an Indices output")
    if ctx.attr("ceil_mode", 0) or any(d != 1 for d in ctx.attr("dilations", [1, 1])):
        raise UnsupportedError("MaxPool with ceil_mode or dilation")
    kh, kw = ctx.attr("kernel_shape")
    sh, sw = ctx.attr("strides", [1, 1])
    top, left, bottom, right = ctx.attr("pads", [0, 0, 0, 0])
    low = np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=low)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    y = None
    for i in range(kh):  # one strided slice per kernel offset: much faster than a window reduce
        for j in range(kw):
            part = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            y = part.copy() if y is None else np.maximum(y, part, out=y)
    return y


# ------------------------------------------------------------------ float ops of QDQ graphs


@reference_op("Conv")
def conv(ctx: OpContext, x, w, b=None):
    y = float_conv2d(x, w, ctx.attr("strides", [1, 1]), ctx.attr("pads", [0, 0, 0, 0]),
                     ctx.attr("dilations", [1, 1]), ctx.attr("group", 1))
    if b is not None:
        y = y + b.astype(np.float64).reshape(1, -1, 1, 1)
    return y.astype(x.dtype)


@reference_op("Gemm")
def gemm(ctx: OpContext, a, b, c=None):
    a64 = a.astype(np.float64).T if ctx.attr("transA", 0) else a.astype(np.float64)
    b64 = b.astype(np.float64).T if ctx.attr("transB", 0) else b.astype(np.float64)
    y = ctx.attr("alpha", 1.0) * (a64 @ b64)
    if c is not None:
        y = y + ctx.attr("beta", 1.0) * c.astype(np.float64)
    return y.astype(a.dtype)


@reference_op("MatMul")
def matmul(ctx: OpContext, a, b):
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(a.dtype)


@reference_op("GlobalAveragePool")
def global_average_pool(ctx: OpContext, x):
    return x.astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(x.dtype)


@reference_op("AveragePool")
def average_pool(ctx: OpContext, x):
    """2-D average pooling summed in float64, zero padding counted (``count_include_pad=1``) or
    not (each window divided by its number of real pixels); no ceil mode or dilation."""
    if ctx.attr("ceil_mode", 0) or any(d != 1 for d in ctx.attr("dilations", [1, 1])) or \
            ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise UnsupportedError("AveragePool with ceil_mode, dilation or auto_pad")
    kh, kw = ctx.attr("kernel_shape")
    pads = ctx.attr("pads", [0, 0, 0, 0])
    strides = ctx.attr("strides", [1, 1])
    sums = float_conv2d(x.reshape(-1, 1, *x.shape[2:]), np.ones((1, 1, kh, kw)), strides, pads)
    if ctx.attr("count_include_pad", 0):
        count = np.float64(kh * kw)
    else:
        ones = np.ones((1, 1, *x.shape[2:]))
        count = float_conv2d(ones, np.ones((1, 1, kh, kw)), strides, pads)
    return (sums / count).reshape(*x.shape[:2], *sums.shape[2:]).astype(x.dtype)
