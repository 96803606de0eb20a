"""Integer arithmetic in Relax: the building blocks every converter lowers to.

Each function emits Relax operators for one piece of quantized arithmetic and says, in its
docstring, which definition it follows bit for bit:

* :func:`quantize` / :func:`dequantize`: ONNX QuantizeLinear / DequantizeLinear (``x / scale``
  in float32, round half to even, add the zero point as an integer, saturate).
* :func:`requantize_float`: the rescale of ONNX QLinearConv / QLinearMatMul as onnxruntime
  computes it: ``saturate(nearbyint(float32(acc) * multiplier) + zero_point)`` with a float32
  multiplier.
* :func:`requantize_fixed`: the project's fixed-point rescale
  (:mod:`robustq_deploy.fixed_point`): ``((acc * m0 + 2^(n-1)) >> n) + zp`` in int64.
* :func:`broadcast_qparam`: per-tensor, per-axis and blocked scales / zero points.

TVM compiles float32 ``*`` and ``/`` as IEEE operations (no fast-math, no FMA contraction by
default), and ``round`` as ``nearbyint``; the node tests check this on every build.
Constants are folded in numpy where possible so the IR stays small.
"""
from __future__ import annotations

import numpy as np
from tvm import relax

from ..dtypes import DType
from ..kernels.epilogue import FLOAT_INT_LIMIT
from .registry import const_value, dtype_of, shape_of

# Float values are clipped to +-2^24 (exact in float32, wider than any 16-bit grid plus its
# zero point) before the float -> int32 cast, so out-of-range inputs saturate instead of
# hitting the undefined conversion of huge floats; the kernels' fused rescale clips at the same value.
_FLOAT_INT_LIMIT = FLOAT_INT_LIMIT


def const(value, dtype: str | None = None):
    """A Relax constant of exactly ``value``'s dtype (or ``dtype``).

    Always use this: ``relax.const(numpy_int64_array)`` silently makes an int32 constant
    (TVM 0.27), which truncates 64-bit rounding constants to 0.
    """
    arr = np.require(np.asarray(value, dtype=dtype), requirements="C")  # keeps 0-d arrays 0-d
    return relax.const(arr, str(arr.dtype))


def emit(bb, expr):
    return bb.emit(expr)


def broadcast_qparam(bb, p, ndim: int, axis: int, block_size: int = 0, dim: int | None = None):
    """``p`` (scale or zero point) shaped to broadcast against an ``ndim`` tensor.

    Scalars and 1-element tensors stay scalars (per tensor); a 1-D tensor lies along ``axis``
    (per axis); with ``block_size > 0``, ``p`` has the data's rank and each entry covers
    ``block_size`` consecutive elements along ``axis`` (blocked; the last block may be short,
    ``dim`` is the data's extent on ``axis``).
    """
    value = const_value(p)
    if value is not None:
        return const(broadcast_np(value, ndim, axis, block_size, dim))
    shape = shape_of(p)
    if len(shape) == 0:
        return p
    if block_size:
        rep = emit(bb, relax.op.repeat(p, block_size, axis=axis))
        return emit(bb, relax.op.strided_slice(rep, axes=[axis], begin=[0], end=[dim]))
    if len(shape) == 1 and shape[0] == 1:
        return emit(bb, relax.op.reshape(p, []))
    dims = [1] * ndim
    dims[axis] = shape[0]
    return emit(bb, relax.op.reshape(p, dims))


def broadcast_np(v: np.ndarray, ndim: int, axis: int, block_size: int = 0, dim: int | None = None) -> np.ndarray:
    """numpy form of :func:`broadcast_qparam` for constant parameters."""
    if v.ndim == 0:
        return v
    if block_size:
        return np.take(np.repeat(v, block_size, axis=axis), range(dim), axis=axis)
    if v.size == 1 and v.ndim == 1:
        return v.reshape(())
    dims = [1] * ndim
    dims[axis] = v.size
    return v.reshape(dims)


def as_int32(bb, x):
    return x if dtype_of(x) == "int32" else emit(bb, relax.op.astype(x, "int32"))


def saturate(bb, y_int32, lo: int, hi: int, storage: str):
    """Clip int32 values to ``[lo, hi]`` and cast to the storage dtype."""
    y = emit(bb, relax.op.clip(y_int32, lo, hi))
    return y if storage == "int32" else emit(bb, relax.op.astype(y, storage))


def round_to_int32(bb, f):
    """float32 -> int32, rounding half to even (``nearbyint``), saturating at +-2^24."""
    r = emit(bb, relax.op.round(f))
    r = emit(bb, relax.op.clip(r, -_FLOAT_INT_LIMIT, _FLOAT_INT_LIMIT))
    return emit(bb, relax.op.astype(r, "int32"))


def add_zero_point(bb, y_int32, zp):
    if zp is None:
        return y_int32
    value = const_value(zp)
    if value is not None and not np.any(value):
        return y_int32
    return emit(bb, relax.op.add(y_int32, as_int32(bb, zp)))


def quantize(bb, x, scale, zp, qt: DType):
    """ONNX QuantizeLinear: ``saturate(rint(x / scale) + zp)``; ``scale``/``zp`` broadcastable."""
    if dtype_of(x) != "float32":
        x = emit(bb, relax.op.astype(x, "float32"))
    if dtype_of(scale) != "float32":
        scale = emit(bb, relax.op.astype(scale, "float32"))
    q = round_to_int32(bb, emit(bb, relax.op.divide(x, scale)))
    return saturate(bb, add_zero_point(bb, q, zp), qt.qmin, qt.qmax, qt.storage)


def dequantize(bb, x, scale, zp, out_dtype: str = "float32"):
    """ONNX DequantizeLinear: ``float32(x - zp) * scale`` (the difference is exact in int64)."""
    wide = "int64" if dtype_of(x) in ("int32", "uint32", "int64") else "int32"
    d = emit(bb, relax.op.astype(x, wide))
    if zp is not None and not (const_value(zp) is not None and not np.any(const_value(zp))):
        d = emit(bb, relax.op.subtract(d, emit(bb, relax.op.astype(zp, wide))))
    f = emit(bb, relax.op.astype(d, "float32"))
    if dtype_of(scale) != "float32":
        scale = emit(bb, relax.op.astype(scale, "float32"))
    y = emit(bb, relax.op.multiply(f, scale))
    return y if out_dtype == "float32" else emit(bb, relax.op.astype(y, out_dtype))


def requantize_float(bb, acc, multiplier, zp, lo: int, hi: int, storage: str):
    """onnxruntime's QLinear* rescale: ``clip(nearbyint(float32(acc) * multiplier) + zp)``.

    ``multiplier`` is float32 (``x_scale * w_scale / y_scale`` evaluated in float32 by the
    caller, in that order, as onnxruntime does); ``[lo, hi]`` is the output grid, narrowed by a
    fused ReLU.
    """
    f = emit(bb, relax.op.multiply(emit(bb, relax.op.astype(acc, "float32")), multiplier))
    return saturate(bb, add_zero_point(bb, round_to_int32(bb, f), zp), lo, hi, storage)


def requantize_fixed(bb, acc, m0: np.ndarray, n: np.ndarray, zp: int, lo: int, hi: int, storage: str):
    """The project's fixed-point rescale, bit for bit :func:`robustq_deploy.fixed_point.requantize`.

    ``m0`` and ``n`` are int64 arrays shaped to broadcast against ``acc`` (per channel).
    """
    a = emit(bb, relax.op.astype(acc, "int64"))
    a = emit(bb, relax.op.multiply(a, const(m0, "int64")))
    a = emit(bb, relax.op.add(a, const(np.left_shift(np.int64(1), n - 1), "int64")))
    a = emit(bb, relax.op.right_shift(a, const(n, "int64")))
    if zp:
        a = emit(bb, relax.op.add(a, const(zp, "int64")))
    a = emit(bb, relax.op.clip(a, lo, hi))
    return emit(bb, relax.op.astype(a, storage))


def dequantize_acc(bb, acc, acc_scale):
    """int32 accumulator -> float32 ``float32(acc) * acc_scale`` (the final layer's logits)."""
    return emit(bb, relax.op.multiply(emit(bb, relax.op.astype(acc, "float32")), acc_scale))


def zero_centered(bb, x, zp, wide: str = "int16"):
    """``x - zp`` in a wider integer dtype; ``x`` itself when ``zp`` is absent or all zero."""
    value = const_value(zp) if zp is not None else np.zeros(())
    if value is not None and not np.any(value):
        return x
    return emit(bb, relax.op.subtract(emit(bb, relax.op.astype(x, wide)), emit(bb, relax.op.astype(zp, wide))))


def widen_for(*dtypes: str) -> str:
    """Smallest signed dtype holding the difference of two values of any of ``dtypes``."""
    bits = max(np.dtype(d).itemsize * 8 for d in dtypes)
    return "int16" if bits <= 8 else "int32" if bits <= 16 else "int64"
