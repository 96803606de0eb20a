"""BatchNorm + sign folded into per-channel integer thresholds on the accumulator.

A binary network applies ``sign(BN(x))`` to a layer output ``x = s_acc[c] * acc`` (``s_acc > 0``).
In eval mode ``BN(x) = gamma * (x - mu) / sqrt(var + eps) + beta`` is affine per channel, so
``sign(BN(x)) = +1`` (the twin maps 0 to +1) exactly when

* ``gamma > 0``: ``acc >= ceil(t / s_acc)``,
* ``gamma < 0``: ``acc <= floor(t / s_acc)`` (the comparison flips),
* ``gamma = 0``: always (``beta >= 0``) or never (``beta < 0``),

with ``t = mu - beta * sqrt(var + eps) / gamma``. Both cases are written as one test
``lo[c] <= acc <= hi[c]`` on int32 (``lo = INT32_MIN`` or ``hi = INT32_MAX`` where a side is
open), so the deployed graph needs only GreaterOrEqual / LessOrEqual / And / Where, no multiply.
Thresholds are computed in float64 from the float32 parameters; the twin computes BN in float32,
so the two can differ only for accumulators within float rounding of ``t / s_acc``.
Max pooling after BN commutes with this test (``max_i sign(y_i) = sign(max_i y_i)``) whatever
the sign of gamma, because sign is monotone.
"""
from __future__ import annotations

import numpy as np
from torch import nn

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def sign_thresholds(bn: nn.modules.batchnorm._BatchNorm, acc_scale) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` int32 ``[C]`` with ``sign(bn(acc * acc_scale)) = +1  <=>  lo <= acc <= hi``."""
    c = bn.num_features
    mu = bn.running_mean.detach().double().numpy() if bn.running_mean is not None else np.zeros(c)
    var = bn.running_var.detach().double().numpy() if bn.running_var is not None else np.ones(c)
    gamma = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones(c)
    beta = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros(c)
    s = np.broadcast_to(np.asarray(acc_scale, np.float32).astype(np.float64), (c,))
    sigma = np.sqrt(var.astype(np.float32).astype(np.float64) + np.float64(np.float32(bn.eps)))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (mu - beta * sigma / gamma) / s  # threshold in accumulator units
    lo = np.full(c, INT32_MIN, np.int64)
    hi = np.full(c, INT32_MAX, np.int64)
    pos, neg = gamma > 0, gamma < 0
    lo[pos] = np.clip(np.ceil(a[pos]), INT32_MIN, INT32_MAX)
    hi[neg] = np.clip(np.floor(a[neg]), INT32_MIN, INT32_MAX)
    never = (gamma == 0) & (beta < 0)
    lo[never], hi[never] = INT32_MAX, INT32_MIN
    return lo.astype(np.int32), hi.astype(np.int32)


__all__ = ["sign_thresholds"]
