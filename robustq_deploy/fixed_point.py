"""Fixed-point requantization: the project's one definition of integer rescaling.

An int32 accumulator ``acc`` with real scale ``s_acc`` is rescaled to an output grid with scale
``s_out`` by the real multiplier ``M = s_acc / s_out``, stored as an int32 mantissa and a shift:

    M ~= m0 * 2**-n,   2**30 <= m0 < 2**31,   1 <= n <= 62
    y  = clamp(((acc * m0 + 2**(n-1)) >> n) + zero_point, qmin, qmax)

``>>`` is an arithmetic (flooring) shift on int64, so rounding is half toward +infinity. ``acc``
is int32 and ``m0 < 2**31``, so ``acc * m0`` fits int64 without overflow. The relative error of
``m0 * 2**-n`` against ``M`` is below ``2**-30``, so results differ from exact rational rounding
only when ``acc * M`` lies within ``|acc * M| * 2**-30`` of a half-integer; against the float32
fake-quant twin (which rounds half to even) they agree except at such near-ties (1 LSB).

Every integer path calls or mirrors these functions: the numpy reference interpreter, the ONNX
``integer`` export (as Mul/Add/shift in standard integer ops), the TVM lowering, the kernels and
the FPGA-like target's C code. Multipliers are computed in float64 from the float32 scales.
"""
from __future__ import annotations

import numpy as np

M0_BITS = 31
MIN_SHIFT, MAX_SHIFT = 1, 62


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """``(m0, n)`` int64 arrays with ``m0 * 2**-n ~= real`` (``real`` >= 0, any shape).

    ``real == 0`` gives ``m0 = 0``. Multipliers too small for ``n <= 62`` keep ``n = 62`` with a
    smaller mantissa; multipliers ``>= 2**30`` are refused (no real network needs them).
    """
    r = np.asarray(real, dtype=np.float64)
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("requantization multipliers must be finite and >= 0")
    if np.any(r >= 2.0**30):
        raise ValueError("requantization multiplier >= 2**30 is not representable")
    mant, exp = np.frexp(r)  # r = mant * 2**exp, 0.5 <= mant < 1
    m0 = np.round(mant * 2.0**M0_BITS).astype(np.int64)
    n = (M0_BITS - exp).astype(np.int64)
    carry = m0 == 2**M0_BITS  # mantissa rounded up to 1.0
    m0 = np.where(carry, m0 // 2, m0)
    n = np.where(carry, n - 1, n)
    too_small = n > MAX_SHIFT
    if np.any(too_small):
        m0 = np.where(too_small, np.round(r * 2.0**MAX_SHIFT).astype(np.int64), m0)
        n = np.where(too_small, MAX_SHIFT, n)
    zero = r == 0
    m0 = np.where(zero, 0, m0)
    n = np.where(zero, MAX_SHIFT, n)
    return m0.astype(np.int64), np.maximum(n, MIN_SHIFT).astype(np.int64)


def rounding_shift(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``(x + 2**(n-1)) >> n`` on int64: divide by ``2**n``, rounding half toward +infinity."""
    x = np.asarray(x, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    return (x + (np.int64(1) << (n - 1))) >> n


def requantize(acc, m0, n, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """Rescale int32 accumulators to the output grid; ``m0``/``n`` broadcast (per channel)."""
    a = np.asarray(acc)
    if a.dtype.kind not in "iu":
        raise TypeError(f"requantize expects integer accumulators, got {a.dtype}")
    y = rounding_shift(a.astype(np.int64) * np.asarray(m0, np.int64), n) + np.int64(zero_point)
    return np.clip(y, qmin, qmax)


def multiplier_for(acc_scale, out_scale) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point form of ``acc_scale / out_scale`` (float32 scales, computed in float64)."""
    return quantize_multiplier(np.asarray(acc_scale, np.float32).astype(np.float64)
                               / np.asarray(out_scale, np.float32).astype(np.float64))
