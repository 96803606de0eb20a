"""Exact integer convolution and matrix product in numpy.

Integer results must be exact, but numpy's integer matmul does not use BLAS and is slow. A sum
of ``K`` products ``|x * w| <= B`` is exact in a float type whenever ``K * B`` stays below its
integer limit (2**24 for float32, 2**53 for float64): every partial sum is then an integer the
type represents exactly, in any summation order. So products run in float32 BLAS under 2**24,
float64 BLAS under 2**53, and int64 arithmetic above. Results are returned as int64; callers
wrap them to int32 as ONNX does.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_EXACT_F32, _EXACT_F64 = 2**24, 2**53
_CHUNK = 1 << 22  # im2col elements per block (32 MiB as float64)


def _bound(a: np.ndarray) -> int:
    return max(abs(int(a.min())), abs(int(a.max()))) if a.size else 0


def _exact_type(a: np.ndarray, b: np.ndarray, k: int) -> type:
    """The cheapest dtype in which a sum of ``k`` products of ``a`` and ``b`` entries is exact."""
    bound = k * _bound(a) * _bound(b)
    return np.float32 if bound < _EXACT_F32 else np.float64 if bound < _EXACT_F64 else np.int64


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of integer arrays, exact, as int64."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    t = _exact_type(a, b, a.shape[-1])
    return np.matmul(a.astype(t), b.astype(t)).astype(np.int64)


def int_conv2d(x: np.ndarray, w: np.ndarray, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
               group: int = 1) -> np.ndarray:
    """NCHW integer convolution (zero padding, ONNX ``pads = [top, left, bottom, right]``), int64."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    t = _exact_type(x, w, w[0].size)
    return _conv2d(x.astype(t), w.astype(t), strides, pads, dilations, group, np.matmul).astype(np.int64)


def float_conv2d(x: np.ndarray, w: np.ndarray, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                 group: int = 1) -> np.ndarray:
    """Float convolution summed in float64 (for QDQ graphs; not bit-exact with any runtime)."""
    return _conv2d(np.asarray(x, np.float64), np.asarray(w, np.float64), strides, pads, dilations, group, np.matmul)


def _conv2d(x, w, strides, pads, dilations, group, matmul) -> np.ndarray:
    n, c, _, _ = x.shape
    m, cg, kh, kw = w.shape
    if cg * group != c or m % group:
        raise ValueError(f"conv: {c} input channels, weight {list(w.shape)}, group {group}")
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    dh, dw = dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::strides[0], ::strides[1], ::dh, ::dw]
    oh, ow = win.shape[2], win.shape[3]
    mg = m // group
    out = np.empty((n, m, oh, ow), x.dtype)
    step = max(1, _CHUNK // max(1, oh * ow * cg * kh * kw))  # bound the im2col buffer
    for i in range(0, n, step):
        for g in range(group):
            cols = win[i:i + step, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(-1, cg * kh * kw)
            wg = w[g * mg:(g + 1) * mg].reshape(mg, -1)
            res = matmul(cols, wg.T).reshape(-1, oh, ow, mg)
            out[i:i + step, g * mg:(g + 1) * mg] = res.transpose(0, 3, 1, 2)
    return out


def wrap_int32(a: np.ndarray) -> np.ndarray:
    """Two's complement wrap to int32, as C integer arithmetic in the runtimes does."""
    return np.asarray(a, np.int64).astype(np.int32)


__all__ = ["float_conv2d", "int_conv2d", "int_matmul", "wrap_int32"]
