"""onnxruntime's MLAS arithmetic reproduced in numpy, where an engine's table or twin must match
onnxruntime bit for bit (the compile stage's QLinearSigmoid table, the twin's)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math

import numpy as np


def fma32(a, b, c) -> np.ndarray:
    """float32 ``a * b + c`` rounded once (a fused multiply-add), exactly, in numpy.

    The float64 product of two float32 values is exact; the float64 sum is made round-to-odd
    (the inexact result keeps an odd last bit), after which the rounding to float32 is the
    correctly rounded fused result (float64 carries more than 24 + 2 bits).
    """
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    bv = s - p
    err = (p - (s - bv)) + (c - bv)  # s + err == p + c exactly (TwoSum)
    bits = s.view(np.int64)
    even = (bits & 1) == 0
    toward = np.nextafter(s, np.where(err > 0, np.inf, -np.inf))
    s = np.where((err != 0) & even, toward, s)
    return s.astype(np.float32)


# MLAS's logistic constants (Eigen's rational approximation), float32.
_LOGISTIC = {k: np.float32(v) for k, v in {
    "alpha_9": 4.37031012579801e-11, "alpha_7": 1.15627324459942e-07, "alpha_5": 6.08574864600143e-05,
    "alpha_3": 8.51377133304701e-03, "alpha_1": 2.48287947061529e-01, "beta_10": 6.10247389755681e-13,
    "beta_8": 5.76102136993427e-09, "beta_6": 6.29106785017040e-06, "beta_4": 1.70198817374094e-03,
    "beta_2": 1.16817656904453e-01, "beta_0": 9.93151921023180e-01}.items()}


def mlas_logistic(x: np.ndarray) -> np.ndarray:
    """MLAS's logistic on x86 with FMA3 (``MlasLogisticKernelFma3``, which onnxruntime picks on
    every AVX2 CPU, AVX-512 ones included): clamp to [-18, 18], odd/even polynomials by fused
    multiply-adds, ``p / q + 0.5``, clamped below at 0. CPUs without FMA3 run the SSE2 kernel
    (separate multiply and add), which can differ in the last bit of a few table entries."""
    k = _LOGISTIC
    v = np.minimum(np.maximum(np.asarray(x, np.float32), np.float32(-18.0)), np.float32(18.0))
    v2 = v * v
    p = fma32(v2, k["alpha_9"], k["alpha_7"])
    for name in ("alpha_5", "alpha_3", "alpha_1"):
        p = fma32(v2, p, k[name])
    p = v * p
    q = fma32(v2, k["beta_10"], k["beta_8"])
    for name in ("beta_6", "beta_4", "beta_2", "beta_0"):
        q = fma32(v2, q, k[name])
    return np.maximum(np.float32(0.0), p / q + np.float32(0.5)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _logf():
    """The C library's single-precision ``logf`` (the function onnxruntime's kernel calls);
    numpy's float32 log where no C math library can be found."""
    name = ctypes.util.find_library("m")
    if name is None:
        return lambda v: float(np.log(np.float32(v)))
    fn = ctypes.CDLL(name).logf
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return fn


def qlinear_softmax_table(x_scale, reduce_len: int) -> np.ndarray:
    """onnxruntime's QLinearSoftmax exponential table (256 float32 entries).

    Entry ``i`` is ``float32(exp(((i - 255.0) + shift) * x_scale))`` in double, with
    ``shift = max(0, double(logf(FLT_MAX / float32(reduce_len))) - 5) / x_scale``: the largest
    input of a row reads entry 255, an input ``d`` steps below it entry ``255 - d``, and the
    shift keeps a row's sum of ``reduce_len`` entries below FLT_MAX. Computed with the C
    library's ``exp`` and ``logf``, as onnxruntime's kernel is.
    """
    xs = float(np.float32(x_scale))
    fmax = np.float32(np.finfo(np.float32).max)
    shift = max(0.0, float(_logf()(float(fmax / np.float32(reduce_len)))) - 5.0) / xs
    return np.array([math.exp(((i - 255.0) + shift) * xs) for i in range(256)], np.float64).astype(np.float32)


__all__ = ["fma32", "mlas_logistic", "qlinear_softmax_table"]
