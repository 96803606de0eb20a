"""onnxruntime's com.microsoft QOperator contrib ops (the ``QuantFormat.QOperator`` graphs).

Each op is lowered to the arithmetic of onnxruntime's x86 CPU kernel (MLAS), so results match
it bit for bit; the docstring of each converter gives the formula. Scales and zero points must
be constant scalars (as onnxruntime's quantizer writes them); anything else is refused with a
one-line :class:`~robustq_deploy.errors.UnsupportedError` naming the node.

* QLinearGlobalAveragePool (MLAS ``qlgavgpool``): integer sum over the image, then
  ``saturate(nearbyint(float32(sum - x_zp * n) * (x_scale / (y_scale * n))) + y_zp)``.
* QLinearAveragePool: float32 window sums in onnxruntime's order, divided by the count, then
  ``saturate(nearbyint(avg / y_scale + y_zp))``; whole-image windows take the global formula.
* QLinearMul (MLAS ``qlmul``): ``saturate(nearbyint(float32((a - a_zp) * (b - b_zp)) * ratio
  + float32(c_zp)))`` with ``ratio = a_scale * b_scale / c_scale``.
* QLinearSigmoid, QLinearLeakyRelu, QLinearConcat: onnxruntime evaluates these through a
  256-entry table per input built from the input's and output's quantization parameters; the
  same table is built here at compile time (same float32 formula, MLAS's logistic polynomial
  with its FMA3 kernel's fused multiply-adds) and lowered as a gather.

* QLinearSoftmax: onnxruntime's exponential table (:func:`qlinear_softmax_table`) read at
  ``255 - (row max - x)``, the row summed in float32 in index order, then
  ``saturate(nearbyint(double(e) * floor(1 / y_scale) / double(sum)) + y_zp)`` in double.

Not lowered: QLinearReduceMean. onnxruntime has no CPU kernel for it (its quantizer never
writes it), so there is nothing to be bit-exact with.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto
from tvm import relax

from ...errors import UnsupportedError
from ...mlas import fma32, mlas_logistic, qlinear_softmax_table
from .. import arith
from ..dtypes import type_name
from ..registry import (
    Converter,
    ConverterContext,
    dtype_of,
    register_converter,
    shape_of,
)
from .add import const_scalar

MS = "com.microsoft"
_EIGHT_BIT = (TensorProto.INT8, TensorProto.UINT8)


def _eight_bit_problems(ctx: ConverterContext, indices) -> list[str]:
    return [f"{ctx.where}: input {i} has element type {type_name(ctx.in_type(i))}; supported: int8, uint8"
            for i in indices if ctx.in_type(i) is not None and ctx.in_type(i) not in _EIGHT_BIT]


def _static_dims(ctx: ConverterContext, shape: list, axes) -> list[int]:
    """``shape``'s extents on ``axes``, which must be static (the batch axis may be symbolic)."""
    dims = [shape[a] for a in axes]
    if not all(isinstance(d, int) for d in dims):
        raise UnsupportedError(f"{ctx.where}: input shape {shape} must be static on axes {list(axes)}")
    return dims


def _qparams(ctx: ConverterContext, inputs, pairs) -> list[tuple[np.float32, np.int32]]:
    """(scale, zero point) constant scalars for each (scale index, zp index) of ``pairs``; an
    omitted zero point is 0, an omitted scale is refused."""
    def arg(i):
        return inputs[i] if i < len(inputs) else None

    out = []
    for s, z in pairs:
        if arg(s) is None:
            raise UnsupportedError(f"{ctx.where}: input {s} (a scale) is required")
        out.append((const_scalar(ctx, arg(s), f"{ctx.node.input[s]} (scale)", np.float32),
                    const_scalar(ctx, arg(z), f"input {z} (zero point)", np.int32)))
    return out


def _grid(ctx: ConverterContext, x):
    return ctx.in_qtype(0, x)


@register_converter("QLinearGlobalAveragePool", domain=MS)
class QLinearGlobalAveragePool(Converter):
    """Global average over the spatial axes (NCHW, or NHWC with ``channels_last=1``).

    As MLAS: ``sum`` of the ``n`` spatial values in int32 (exact), then
    ``saturate(nearbyint(float32(sum - x_zp * n) * scale) + y_zp)`` with the float32
    ``scale = x_scale / (y_scale * float32(n))``. onnxruntime refuses ``n >= 2^24`` and a
    ``scale`` outside ``[2^-32, 256)``; so does this lowering.
    """

    @classmethod
    def check(cls, ctx):
        return _eight_bit_problems(ctx, (0,))

    @classmethod
    def impl_v1(cls, ctx, inputs):
        x = inputs[0]
        shape = shape_of(x)
        if len(shape) < 3:
            raise UnsupportedError(f"{ctx.where}: input rank {len(shape)} (at least 3: N, C and spatial axes)")
        return global_average(ctx, inputs, _spatial_axes(len(shape), bool(ctx.attr("channels_last", 0))))


def _spatial_axes(ndim: int, channels_last: bool) -> list[int]:
    return list(range(1, ndim - 1)) if channels_last else list(range(2, ndim))


def global_average(ctx: ConverterContext, inputs, axes: list[int]):
    """MLAS's quantized global average over ``axes`` (kept as extent-1 axes)."""
    bb, x = ctx.bb, inputs[0]
    n = int(np.prod(_static_dims(ctx, shape_of(x), axes)))
    (xs, xz), (ys, yz) = _qparams(ctx, inputs, ((1, 2), (3, 4)))
    scale = np.float32(xs / (ys * np.float32(n)))
    if n >= 1 << 24 or not (2.0 ** -32 <= scale < 256.0):
        raise UnsupportedError(f"{ctx.where}: x_scale / (y_scale * {n}) = {scale:g} is outside onnxruntime's "
                               "range [2^-32, 256) (or the image has 2^24 or more elements)")
    qt = _grid(ctx, x)
    acc = bb.emit(relax.op.sum(bb.emit(relax.op.astype(x, "int32")), axis=axes, keepdims=True))
    if xz:
        acc = bb.emit(relax.op.subtract(acc, arith.const(np.int32(xz) * np.int32(n), "int32")))
    return arith.requantize_float(bb, acc, arith.const(scale, "float32"), arith.const(yz, "int32"),
                                  qt.qmin, qt.qmax, qt.storage)


@register_converter("QLinearAveragePool", domain=MS)
class QLinearAveragePool(Converter):
    """onnxruntime's quantized average pool (NCHW, or NHWC with ``channels_last=1``; any
    number of spatial axes).

    A window covering the whole image without padding takes the global-average formula, as
    onnxruntime does. Otherwise, as its CPU kernel: the input dequantized to float32
    (``x_scale * float32(x - x_zp)``), each window summed in float32 in row-major window order
    (padding skipped: adding the zeros of the padded border changes no float sum), divided by
    the window's element count (the kernel size with ``count_include_pad=1``, else the
    elements inside the image), then ``saturate(nearbyint(avg / y_scale + float32(y_zp)))``.
    ``auto_pad`` SAME_* and ``ceil_mode=1`` are refused.
    """

    @classmethod
    def check(cls, ctx):
        problems = _eight_bit_problems(ctx, (0,))
        if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID", ""):
            problems.append(f"{ctx.where}: auto_pad {ctx.attr('auto_pad')} is not supported (NOTSET, VALID)")
        if ctx.attr("ceil_mode", 0):
            problems.append(f"{ctx.where}: ceil_mode=1 is not supported")
        if ctx.attr("kernel_shape") is None:
            problems.append(f"{ctx.where}: kernel_shape is required")
        return problems

    @classmethod
    def impl_v1(cls, ctx, inputs):
        bb, x = ctx.bb, inputs[0]
        shape = shape_of(x)
        kernel = [int(k) for k in ctx.attr("kernel_shape")]
        r = len(kernel)
        if len(shape) != r + 2:
            raise UnsupportedError(f"{ctx.where}: {r}-D kernel for a rank-{len(shape)} input")
        channels_last = bool(ctx.attr("channels_last", 0))
        axes = _spatial_axes(len(shape), channels_last)
        dims = _static_dims(ctx, shape, axes)
        strides = [int(v) for v in ctx.attr("strides", [1] * r)]
        pads = [0] * (2 * r) if ctx.attr("auto_pad", "NOTSET") == "VALID" else \
            [int(v) for v in ctx.attr("pads", [0] * (2 * r))]
        if kernel == dims and not any(pads):
            return global_average(ctx, inputs, axes)
        (xs, xz), (ys, yz) = _qparams(ctx, inputs, ((1, 2), (3, 4)))
        qt = _grid(ctx, x)
        begin, end = pads[:r], pads[r:]
        out = [(d + b + e - k) // s + 1 for d, b, e, k, s in zip(dims, begin, end, kernel, strides)]
        if min(out) < 1:
            raise UnsupportedError(f"{ctx.where}: kernel {kernel} does not fit the padded input {dims}")
        xf = bb.emit(relax.op.subtract(arith.as_int32(bb, x), arith.const(xz, "int32")))
        xf = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(xf, "float32")), arith.const(xs, "float32")))
        if any(pads):
            width = [0] * (2 * len(shape))
            for a, b, e in zip(axes, begin, end):
                width[2 * a], width[2 * a + 1] = b, e
            xf = bb.emit(relax.op.nn.pad(xf, width, pad_value=0.0))
        acc = None
        for offset in np.ndindex(*kernel):  # row-major window order, as onnxruntime sums
            term = bb.emit(relax.op.strided_slice(
                xf, axes=axes, begin=list(offset), end=[o + (n - 1) * s + 1 for o, n, s in zip(offset, out, strides)],
                strides=strides))
            acc = term if acc is None else bb.emit(relax.op.add(acc, term))
        if ctx.attr("count_include_pad", 0):
            count = np.float32(np.prod(kernel))
        else:
            per_axis = []
            for d, b, k, s, n in zip(dims, begin, kernel, strides, out):
                start = np.arange(n) * s - b
                per_axis.append(np.minimum(start + k, d) - np.maximum(start, 0))
            count = np.ones((), np.int64)
            for c in per_axis:
                count = np.multiply.outer(count, c)
            bshape = [1] * len(shape)
            for a, n in zip(axes, out):
                bshape[a] = n
            count = count.reshape(bshape).astype(np.float32)
        avg = bb.emit(relax.op.divide(acc, arith.const(count, "float32")))
        q = bb.emit(relax.op.add(bb.emit(relax.op.divide(avg, arith.const(ys, "float32"))),
                                 arith.const(np.float32(yz), "float32")))
        return arith.saturate(bb, arith.round_to_int32(bb, q), qt.qmin, qt.qmax, qt.storage)


# ---- 256-entry tables (QLinearSigmoid, QLinearLeakyRelu, QLinearConcat) -------------------------

def _grid_values(qt) -> np.ndarray:
    """The 256 values of an 8-bit grid in table order (the byte pattern 0..255)."""
    return np.arange(256, dtype=np.uint8).view(np.dtype(qt.storage)).astype(np.int32)


def quantize_np(y: np.ndarray, scale: np.float32, zp, qt) -> np.ndarray:
    """MLAS QuantizeLinear in numpy: ``clip(nearbyint(y / scale), min - zp, max - zp) + zp``."""
    q = np.rint(np.asarray(y, np.float32) / np.float32(scale))
    q = np.clip(q, qt.qmin - int(zp), qt.qmax - int(zp)).astype(np.int32) + np.int32(zp)
    return q.astype(qt.storage)


def lookup_table(qt, xs, xz, ys, yz, fn) -> np.ndarray:
    """onnxruntime's 8-bit unary table: entry ``i`` (the byte ``i`` read as ``qt``) holds
    ``quantize(fn(x_scale * float32(x - x_zp)))``."""
    x = np.float32(xs) * (_grid_values(qt) - np.int32(xz)).astype(np.float32)
    return quantize_np(fn(x.astype(np.float32)), ys, yz, qt)


def gather_table(bb, x, table: np.ndarray):
    """``table[byte(x)]``: the 8-bit input's bit pattern (0..255) indexes a constant table."""
    idx = x if dtype_of(x) == "uint8" else bb.emit(relax.op.astype(x, "uint8"))
    idx = bb.emit(relax.op.astype(idx, "int32"))
    return bb.emit(relax.op.take(arith.const(table), idx, axis=0))


def _unary_problems(ctx):
    problems = _eight_bit_problems(ctx, (0,))
    for i in (2, 4):
        if ctx.has_input(i) and ctx.in_type(i) is not None and ctx.in_type(0) is not None \
                and ctx.in_type(i) != ctx.in_type(0):
            problems.append(f"{ctx.where}: zero point {i} has type {type_name(ctx.in_type(i))}, "
                            f"the input {type_name(ctx.in_type(0))}")
    return problems


class _LookupUnary(Converter):
    """X, X_scale, X_zero_point, Y_scale, Y_zero_point -> table lookup."""

    @classmethod
    def check(cls, ctx):
        return _unary_problems(ctx)

    @classmethod
    def transform(cls, ctx, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def impl_v1(cls, ctx, inputs):
        x = inputs[0]
        (xs, xz), (ys, yz) = _qparams(ctx, inputs, ((1, 2), (3, 4)))
        qt = _grid(ctx, x)
        return gather_table(ctx.bb, x, lookup_table(qt, xs, xz, ys, yz, lambda v: cls.transform(ctx, v)))


@register_converter("QLinearSigmoid", domain=MS)
class QLinearSigmoid(_LookupUnary):
    """Table of MLAS's logistic (:func:`mlas_logistic`, the FMA3 kernel of x86 CPUs with AVX2)."""

    @classmethod
    def transform(cls, ctx, x):
        return mlas_logistic(x)


@register_converter("QLinearLeakyRelu", domain=MS)
class QLinearLeakyRelu(_LookupUnary):
    """Table of ``v >= 0 ? v : alpha * v`` in float32 (``alpha`` default 0.01)."""

    @classmethod
    def transform(cls, ctx, x):
        alpha = np.float32(ctx.attr("alpha", 0.01))
        return np.where(x >= 0, x, alpha * x).astype(np.float32)


@register_converter("QLinearConcat", domain=MS)
class QLinearConcat(Converter):
    """Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input, concatenated on
    ``axis``. An input on the output's grid (same scale and zero point) is copied; any other
    is requantized through onnxruntime's identity table
    ``quantize(x_scale * float32(x - x_zp))`` onto the output grid."""

    @classmethod
    def check(cls, ctx):
        n = len(ctx.node.input)
        problems = [] if n >= 5 and (n - 2) % 3 == 0 else [
            f"{ctx.where}: {n} inputs; expected Y_scale, Y_zero_point and (X, X_scale, X_zero_point) triples"]
        out = ctx.in_type(1)
        if out is not None and out not in _EIGHT_BIT:
            problems.append(f"{ctx.where}: output type {type_name(out)}; supported: int8, uint8")
        for i in range(2, n, 3):
            for j in (i, i + 2):
                t = ctx.in_type(j)
                if t is not None and out is not None and t != out:
                    problems.append(f"{ctx.where}: input {j} has type {type_name(t)}, the output {type_name(out)}")
        return problems

    @classmethod
    def impl_v1(cls, ctx, inputs):
        bb = ctx.bb
        (ys, yz), = _qparams(ctx, inputs, ((0, 1),))
        qt = ctx.in_qtype(1, inputs[1]) if inputs[1] is not None else _grid_of_first(ctx, inputs)
        parts = []
        for i in range(2, len(inputs), 3):
            x = inputs[i]
            (xs, xz), = _qparams(ctx, inputs, ((i + 1, i + 2),))
            if xs == ys and xz == yz:
                parts.append(x)
            else:
                parts.append(gather_table(bb, x, lookup_table(qt, xs, xz, ys, yz, lambda v: v)))
        rank = len(shape_of(parts[0]))
        axis = ctx.attr("axis")
        if axis is None:
            raise UnsupportedError(f"{ctx.where}: the axis attribute is required")
        return bb.emit(relax.op.concat(parts, axis=axis + rank if axis < 0 else axis))


def _grid_of_first(ctx, inputs):
    return ctx.in_qtype(2, inputs[2])


@register_converter("QLinearMul", domain=MS)
class QLinearMul(Converter):
    """MLAS ``qlmul`` on x86: ``(a - a_zp) * (b - b_zp)`` in int32 (exact), then
    ``saturate(nearbyint(float32(product) * ratio + float32(c_zp)))``, ``ratio = a_scale *
    b_scale / c_scale`` in float32, the zero point added in float before rounding. The
    formula is symmetric, so any numpy broadcasting gives onnxruntime's values."""

    @classmethod
    def check(cls, ctx):
        return _eight_bit_problems(ctx, (0, 3))

    @classmethod
    def impl_v1(cls, ctx, inputs):
        bb = ctx.bb
        a, b = inputs[0], inputs[3]
        (sa, za), (sb, zb), (sc, zc) = _qparams(ctx, inputs, ((1, 2), (4, 5), (6, 7)))
        ratio = np.float32(np.float32(sa * sb) / sc)
        qt = _grid(ctx, a)
        ac = bb.emit(relax.op.subtract(arith.as_int32(bb, a), arith.const(za, "int32")))
        bc = bb.emit(relax.op.subtract(arith.as_int32(bb, b), arith.const(zb, "int32")))
        prod = bb.emit(relax.op.astype(bb.emit(relax.op.multiply(ac, bc)), "float32"))
        f = bb.emit(relax.op.multiply(prod, arith.const(ratio, "float32")))
        f = bb.emit(relax.op.add(f, arith.const(np.float32(zc), "float32")))
        return arith.saturate(bb, arith.round_to_int32(bb, f), qt.qmin, qt.qmax, qt.storage)


@register_converter("QLinearSoftmax", domain=MS)
class QLinearSoftmax(Converter):
    """onnxruntime's quantized softmax (its x86 CPU kernel, read from the installed binary).

    ``D`` is the extent of ``axis`` (``opset`` >= 13), or of all axes from ``axis`` on
    (``opset`` < 13), which must be static; ``axis`` defaults to -1 at every opset (the
    schema's default, which onnxruntime's kernel reads). Each row of ``D`` values
    reads ``e = table[255 - (max - x)]`` (:func:`qlinear_softmax_table`, built from ``x_scale``
    and ``D``; the input zero point cancels and is not read), sums ``e`` in float32 in index
    order, and writes ``saturate(nearbyint(double(e) * double(floor(1.0f / y_scale)) /
    double(sum)) + y_zp)``, the arithmetic and saturation in double.
    """

    @classmethod
    def check(cls, ctx):
        problems = _unary_problems(ctx)
        if ctx.attr("opset") is None:
            problems.append(f"{ctx.where}: the opset attribute is required (onnxruntime refuses the node without it)")
        return problems

    @classmethod
    def impl_v1(cls, ctx, inputs):
        bb, x = ctx.bb, inputs[0]
        shape = shape_of(x)
        rank = len(shape)
        opset = int(ctx.attr("opset"))
        axis = int(ctx.attr("axis", -1))
        if not -rank <= axis < rank:
            raise UnsupportedError(f"{ctx.where}: axis {axis} is out of range for a rank-{rank} input")
        axis %= rank
        (xs, _), (ys, yz) = _qparams(ctx, inputs, ((1, 2), (3, 4)))
        qt = _grid(ctx, x)
        y_scale = float(np.floor(np.float32(1.0) / ys))
        if opset < 13:  # the row is everything from axis on
            d = int(np.prod(_static_dims(ctx, shape, range(axis, rank))))
            rows = bb.emit(relax.op.reshape(x, [*shape[:axis], d]))
            red = axis
        else:
            d = _static_dims(ctx, shape, [axis])[0]
            rows, red = x, axis
        xi = arith.as_int32(bb, rows)
        top = bb.emit(relax.op.max(xi, axis=[red], keepdims=True))
        idx = bb.emit(relax.op.add(bb.emit(relax.op.subtract(xi, top)), arith.const(np.int32(255), "int32")))
        e = bb.emit(relax.op.take(arith.const(qlinear_softmax_table(xs, d)), idx, axis=0))
        total = bb.emit(relax.op.sum(e, axis=[red], keepdims=True))  # a serial loop in index order
        f = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(e, "float64")), arith.const(np.float64(y_scale), "float64")))
        f = bb.emit(relax.op.divide(f, bb.emit(relax.op.astype(total, "float64"))))
        f = bb.emit(relax.op.add(bb.emit(relax.op.round(f)), arith.const(np.float64(yz), "float64")))
        f = bb.emit(relax.op.clip(f, qt.qmin, qt.qmax))
        y = bb.emit(relax.op.astype(bb.emit(relax.op.astype(f, "int32")), qt.storage))
        return bb.emit(relax.op.reshape(y, shape)) if opset < 13 else y


__all__ = ["QLinearAveragePool", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearLeakyRelu", "QLinearMul", "QLinearSigmoid",
           "QLinearSoftmax", "fma32", "gather_table", "lookup_table", "mlas_logistic", "quantize_np"]
