"""The twin of the packed ``ai.robustq`` ops (:mod:`robustq_deploy.export.robustq_ops`):
the weights are unpacked once, then an exact, differentiable integer convolution / product."""
from __future__ import annotations

import torch
from onnx import TensorProto

from ..export.robustq_ops import DOMAIN, OPS, unpack_weights
from .ops import TwinOpContext, twin_op
from .ops_quant import int_conv, int_matmul
from .values import Val, int_val


def _weights(ctx: TwinOpContext, spec, wp: Val, k: int) -> Val:
    if "w" not in ctx.cache:
        w = unpack_weights(spec.weights, wp.exact.numpy().astype("uint8"), k)
        ctx.cache["w"] = int_val(torch.from_numpy(w.astype("int64")), TensorProto.INT8)
    return ctx.cache["w"]


def _make(spec):
    if spec.layout == "conv":
        def run(ctx: TwinOpContext, x: Val, wp: Val) -> Val:
            kh, kw = ctx.attr("kernel_shape")
            c = x.shape[1]
            w = _weights(ctx, spec, wp, c * kh * kw)
            w4 = Val(w.t.reshape(w.shape[0], c, kh, kw), w.type, w.exact.reshape(w.shape[0], c, kh, kw))
            return int_conv(ctx, x, w4)
    else:
        def run(ctx: TwinOpContext, x: Val, wp: Val) -> Val:
            w = _weights(ctx, spec, wp, x.shape[1])
            return int_matmul(x, Val(w.t.T, w.type, w.exact.T))
    return run


for _spec in OPS.values():
    twin_op(_spec.name, domain=DOMAIN)(_make(_spec))
