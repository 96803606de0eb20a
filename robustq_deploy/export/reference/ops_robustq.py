"""Kernels of the ``ai.robustq`` operators, straight from their specification in
:mod:`robustq_deploy.export.robustq_ops`: unpack the weights, then an exact integer conv / product."""
from __future__ import annotations

import numpy as np

from ..robustq_ops import DOMAIN, OPS, unpack_weights
from .intmath import int_conv2d, int_matmul, wrap_int32
from .session import OpContext, reference_op


def _conv(weights: str):
    def run(ctx: OpContext, x, wp):
        kh, kw = ctx.attr("kernel_shape")
        c = x.shape[1]
        w = unpack_weights(weights, wp, c * kh * kw)
        w = w.reshape(w.shape[0], c, kh, kw)
        return wrap_int32(int_conv2d(x, w, ctx.attr("strides", [1, 1]), ctx.attr("pads", [0, 0, 0, 0])))
    return run


def _gemm(weights: str):
    def run(ctx: OpContext, x, wp):
        w = unpack_weights(weights, wp, x.shape[1])
        return wrap_int32(int_matmul(x, w.T.astype(np.int64)))
    return run


for _spec in OPS.values():
    reference_op(_spec.name, domain=DOMAIN)((_conv if _spec.layout == "conv" else _gemm)(_spec.weights))
