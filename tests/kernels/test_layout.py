"""Storage layouts and compile-time packing are exact inverses of each other."""
from __future__ import annotations

import numpy as np
import pytest

from robustq_deploy.kernels import layout as L
from robustq_deploy.kernels import reference as R


def test_nhwc_round_trip_with_offsets():
    r = np.random.default_rng(0)
    for signed, act in ((False, "uint8"), (True, "uint8"), (False, "int8"), (True, "int8")):
        st = L.storage_for(signed, act)
        lo, hi = (-127, 128) if signed else (0, 256)
        x = r.integers(lo, hi, (2, 5, 3, 4))
        stored = L.to_nhwc(x, st, 8)
        assert stored.dtype == np.dtype(act) and stored.shape == (2, 3, 4, 8)
        np.testing.assert_array_equal(L.from_nhwc(stored, st, 5), x)
        assert np.all(stored[..., 5:].astype(np.int64) - st.offset == 0)  # padding holds the zero point


def test_storage_refuses_bad_offsets():
    with pytest.raises(ValueError):
        L.Storage("uint32", 1)
    with pytest.raises(ValueError):
        L.Storage("float32")


def test_bits_round_trip_and_bit_order():
    r = np.random.default_rng(1)
    x = np.where(r.random((2, 45, 3, 3)) < 0.5, 1, -1).astype(np.int8)
    words = L.bits_nhwc(x)
    assert words.shape == (2, 3, 3, 2) and words.dtype == np.uint32
    np.testing.assert_array_equal(L.unbits_nhwc(words, 45), x)
    assert R.pack_bits(np.array([1, -1, 1] + [-1] * 29), 0)[0] == 0b101  # bit b = element b


def test_fold_bias_undoes_the_storage_offset():
    r = np.random.default_rng(2)
    w = r.integers(-127, 128, (6, 4, 3, 3)).astype(np.int8)
    x = r.integers(-127, 128, (1, 4, 5, 5))
    bias = r.integers(-100, 100, 6)
    st = L.storage_for(True, "uint8")
    stored = x + st.offset
    b = L.fold_bias(bias, w, st.offset, 16)
    got = R.conv2d_acc(stored, w, b[:6], pad=1)  # the kernel sums stored levels, then adds the folded bias
    want = R.conv2d_acc(x, w, bias, pad=1)
    # (kernels pad with the stored zero; this reference pads stored levels with 0, so compare
    # the pixels whose window lies inside the image)
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_array_equal(got[interior], want[interior])


def test_dense_weight_follows_the_nhwc_flatten():
    r = np.random.default_rng(3)
    c, h, w, cs = 3, 2, 2, 4
    wt = r.integers(-5, 6, (7, c * h * w))
    x = r.integers(0, 9, (1, c, h, w))
    flat_nchw = x.reshape(1, -1)
    flat_nhwc = L.to_nhwc(x, L.Storage("uint8"), cs).reshape(1, -1).astype(np.int64)
    np.testing.assert_array_equal(flat_nhwc @ L.dense_weight_from_nchw(wt, c, h, w, cs).T, flat_nchw @ wt.T)


def test_rows_weight_matches_conv():
    r = np.random.default_rng(4)
    w = r.integers(-127, 128, (5, 3, 3, 3))
    x = r.integers(0, 256, (1, 3, 6, 6))
    rows = L.to_rows(x, L.Storage("uint8"), 1, 30)  # [1, 8, 30]: 8 padded rows of 8 pixels x 3 channels + slack
    rw = L.rows_weight(w, 3)  # [5, 12, 3, 1]
    acc = np.zeros((1, 5, 6, 6), np.int64)
    for y in range(6):
        for xx in range(6):
            for kh in range(3):
                seg = rows[0, y + kh, xx * 3: xx * 3 + 12].astype(np.int64)
                acc[0, :, y, xx] += rw[:, :, kh, 0] @ seg
    np.testing.assert_array_equal(acc, R.conv2d_acc(x, w, pad=1))
