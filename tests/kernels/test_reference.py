"""The numpy references against direct loops (the definitions the kernels are held to)."""
from __future__ import annotations

import numpy as np

from robustq_deploy.kernels import reference as R


def naive_conv(x, w, stride, pad, zp):
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    xp = np.full((n, c, h + 2 * pad, wd + 2 * pad), zp, np.int64)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, oc, oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] - zp
            out[:, :, i, j] = np.einsum("nchw,ochw->no", win, w.astype(np.int64))
    return out


def test_conv2d_acc_matches_loops():
    r = np.random.default_rng(0)
    x = r.integers(0, 256, (2, 3, 7, 6))
    w = r.integers(-127, 128, (4, 3, 3, 2))
    for stride, pad, zp in ((1, 0, 0), (2, 1, 9), (3, 2, 128)):
        np.testing.assert_array_equal(R.conv2d_acc(x, w, None, stride, pad, zp), naive_conv(x, w, stride, pad, zp))


def test_dense_pool_and_sums():
    r = np.random.default_rng(1)
    x, w, b = r.integers(-127, 128, (3, 10)), r.integers(-127, 128, (4, 10)), r.integers(-9, 9, 4)
    np.testing.assert_array_equal(R.dense_acc(x, w, b, 5), (x - 5) @ w.T + b)
    y = r.integers(0, 100, (2, 3, 5, 4))
    np.testing.assert_array_equal(R.maxpool2d(y, 2), y[:, :, :4, :4].reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5)))
    np.testing.assert_array_equal(R.avgpool_sum(y), y.sum(axis=(2, 3)))


def test_binarize_and_thresholds():
    np.testing.assert_array_equal(R.binarize(np.array([-2, 0, 3])), [-1, 1, 1])
    acc = np.array([[5, -3], [0, 7]])
    np.testing.assert_array_equal(R.threshold_bits(acc, [1, 7]), [[1, -1], [-1, 1]])
