"""BatchNorm + sign folded into integer thresholds agrees with sign(BN(s * acc)) for every
accumulator, whatever the signs of gamma and beta."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robustq_deploy.export.bnfold import INT32_MAX, INT32_MIN, sign_thresholds


def test_thresholds_equal_sign_of_batchnorm():
    torch.manual_seed(0)
    c = 64
    bn = nn.BatchNorm1d(c).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-3, 3)
        bn.running_var.uniform_(0.1, 4)
        bn.weight.normal_()
        bn.bias.normal_()
        bn.weight[:4] = 0  # gamma = 0: constant sign of beta
        bn.bias[:2] = torch.tensor([0.5, -0.5])
    scale = np.random.default_rng(0).uniform(1e-3, 1e-2, c).astype(np.float32)
    lo, hi = sign_thresholds(bn, scale)
    acc = np.arange(-100_000, 100_001, dtype=np.int64)[:, None]
    with torch.no_grad():
        y = bn(torch.from_numpy((acc * scale.astype(np.float64)).astype(np.float32)).double().float())
    want = (y >= 0).numpy()
    got = (acc >= lo) & (acc <= hi)
    assert np.array_equal(got, want)
    assert (bn.weight < 0).any() and (hi[4:] < INT32_MAX).sum() == int((bn.weight[4:] < 0).sum())
    assert lo[0] == INT32_MIN and hi[0] == INT32_MAX and lo[1] == INT32_MAX and hi[1] == INT32_MIN
    assert want[:, 4:].any(0).all() and (~want[:, 4:]).any(0).all()  # thresholds inside the tested range
