"""Numpy references of every kernel, on logical values in the layouts ONNX uses (NCHW, OIHW).

These are the definitions the compiled kernels are tested against bit for bit. They work on
*logical* integers (an activation's quantized level, a weight's level), never on the kernels'
storage layouts, so a test converts with :mod:`robustq_deploy.kernels.layout`, runs the kernel, converts back
and compares. Requantization is :func:`robustq_deploy.fixed_point.requantize`, the project's
single definition.

Integer sums are computed as float64 matrix products: every accumulator here is far below
2**53 in magnitude (|x| <= 255, |w| <= 127, K <= 2**16 terms), so float64 arithmetic is exact and
uses BLAS instead of slow int64 loops; results are returned as int64.
"""
from __future__ import annotations

import numpy as np

from ..fixed_point import requantize

__all__ = ["avgpool_sum", "binarize", "conv2d_acc", "dense_acc", "maxpool2d", "pack_bits", "requantize",
           "threshold_bits"]


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = a.astype(np.float64) @ b.astype(np.float64)
    if out.size and np.abs(out).max() >= 2.0**52:
        raise OverflowError("reference accumulator exceeds the exact float64 range")
    return out.astype(np.int64)


def conv2d_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, stride: int = 1,
               pad: int = 0, x_zero_point: int = 0) -> np.ndarray:
    """``sum((x - zp) * w) + bias`` of an NCHW input and OIHW weight; zero padding is ``zp``.

    Returns the int64 accumulator ``[N, OC, OH, OW]`` (the kernels keep it in int32; callers
    check the range).
    """
    n, c, h, wd = x.shape
    oc, c2, kh, kw = w.shape
    if c != c2:
        raise ValueError(f"input has {c} channels, weight expects {c2}")
    xz = x.astype(np.int64) - x_zero_point
    if pad:
        xz = np.pad(xz, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xz, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    oh, ow = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    acc = _exact_matmul(cols, w.reshape(oc, -1).T).reshape(n, oh, ow, oc).transpose(0, 3, 1, 2)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)[None, :, None, None]
    return np.ascontiguousarray(acc)


def dense_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None, x_zero_point: int = 0) -> np.ndarray:
    """``(x - zp) @ w.T + bias`` for ``x`` [N, K] and ``w`` [OC, K] (ONNX Gemm with transB=1)."""
    acc = _exact_matmul(x.astype(np.int64) - x_zero_point, w.T)
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)[None, :]
    return acc


def maxpool2d(x: np.ndarray, kernel: int, stride: int | None = None) -> np.ndarray:
    """Max pooling of an NCHW tensor without padding (floor mode), any dtype."""
    s = stride or kernel
    win = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::s, ::s]
    return win.max(axis=(4, 5))


def avgpool_sum(x: np.ndarray) -> np.ndarray:
    """Sum over all pixels of an NCHW tensor -> [N, C] int64 (global average pooling's
    integer part: the 1/(H*W) is folded into the consumer's requantization multiplier)."""
    return x.astype(np.int64).sum(axis=(2, 3))


def binarize(x: np.ndarray) -> np.ndarray:
    """``sign`` with zero mapped to +1, as int8 values in {-1, +1}."""
    return np.where(np.asarray(x) >= 0, 1, -1).astype(np.int8)


def threshold_bits(acc: np.ndarray, thr: np.ndarray, axis: int = 1) -> np.ndarray:
    """Per-channel threshold of an accumulator: +1 where ``acc >= thr`` else -1 (int8).

    This is BatchNorm followed by ``sign`` folded into one comparison; channels whose
    BatchNorm has a negative slope are handled by negating their weights (and bias) beforehand,
    so the comparison is always ``>=``.
    """
    shape = [1] * acc.ndim
    shape[axis] = -1
    return np.where(acc >= np.asarray(thr, np.int64).reshape(shape), 1, -1).astype(np.int8)


def pack_bits(x_pm1: np.ndarray, axis: int = -1, word_bits: int = 32) -> np.ndarray:
    """Pack {-1, +1} values along ``axis`` into little-endian unsigned words.

    Bit ``b`` of word ``j`` holds element ``j * word_bits + b``; a set bit means +1. The axis is
    zero-padded (bit 0, i.e. -1) to a whole number of words; kernels count padded bits as
    agreeing, so both operands must pad with the same bit.
    """
    v = np.moveaxis(np.asarray(x_pm1), axis, -1)
    k = v.shape[-1]
    words = -(-k // word_bits)
    bits = np.zeros(v.shape[:-1] + (words * word_bits,), np.uint64)
    bits[..., :k] = v > 0
    bits = bits.reshape(v.shape[:-1] + (words, word_bits))
    packed = (bits << np.arange(word_bits, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64)
    dtype = {32: np.uint32, 64: np.uint64}[word_bits]
    return np.moveaxis(packed.astype(dtype), -1, axis)
