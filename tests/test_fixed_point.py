"""Fixed-point requantization: hand-computed cases, exactness bounds, overflow safety."""
from fractions import Fraction

import numpy as np
import pytest

from robustq_deploy.fixed_point import multiplier_for, quantize_multiplier, requantize, rounding_shift


def test_quantize_multiplier_hand_cases():
    m0, n = quantize_multiplier([0.5, 1.0, 0.75, 0.0])
    assert m0.tolist() == [2**30, 2**30, 3 * 2**29, 0]
    assert n.tolist() == [31, 30, 31, 62]
    assert np.all((m0[:3] >= 2**30) & (m0[:3] < 2**31))


def test_multiplier_relative_error_below_2_pow_minus_30():
    rng = np.random.default_rng(0)
    real = 10.0 ** rng.uniform(-9, 2, size=2000)
    m0, n = quantize_multiplier(real)
    approx = m0.astype(np.float64) * 2.0 ** (-n.astype(np.float64))
    assert np.max(np.abs(approx / real - 1)) < 2.0**-30


def test_rounding_shift_is_floor_of_half_up():
    x = np.array([-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5], np.int64)
    # divide by 2 rounding half toward +inf: -2.5 -> -2, -1.5 -> -1, -0.5 -> 0, 0.5 -> 1
    assert rounding_shift(x, 1).tolist() == [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3]


def test_requantize_matches_exact_rational_rounding():
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**31), 2**31 - 1, size=5000, dtype=np.int64).astype(np.int32)
    m0, n = quantize_multiplier(0.00123)
    got = requantize(acc, m0, n, 0, -(2**31), 2**31 - 1)
    mult = Fraction(int(m0)) / (1 << int(n))
    want = [int((Fraction(int(a)) * mult + Fraction(1, 2)).__floor__()) for a in acc]
    assert got.tolist() == want  # no int64 overflow even at the int32 extremes


def test_requantize_clamps_and_zero_point():
    m0, n = multiplier_for(np.float32(0.02), np.float32(0.1))  # M = 0.2
    got = requantize(np.array([-100, 0, 2, 3, 1000], np.int32), m0, n, 10, 0, 255)
    assert got.tolist() == [0, 10, 10, 11, 210]


def test_requantize_per_channel_broadcast():
    m0, n = quantize_multiplier(np.array([0.5, 0.25]))
    acc = np.array([[4, 4], [7, 7]], np.int32)
    assert requantize(acc, m0, n, 0, -128, 127).tolist() == [[2, 1], [4, 2]]


def test_requantize_rejects_float_and_bad_multipliers():
    with pytest.raises(TypeError):
        requantize(np.array([1.0]), 1, 1, 0, 0, 1)
    with pytest.raises(ValueError):
        quantize_multiplier([-1.0])
    with pytest.raises(ValueError):
        quantize_multiplier([2.0**31])
