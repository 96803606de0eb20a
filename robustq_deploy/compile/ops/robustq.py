"""The ``ai.robustq`` bit-packed layers (spec: :mod:`robustq_deploy.export.robustq_ops`).

``BinaryConv2d``, ``TernaryConv2d``, ``BinaryGemm``, ``TernaryGemm`` output the exact int32
accumulator ``sum(x * w)`` of packed weights. Each converter hands the call to the kernel hook
(:mod:`..kernels`, op kinds ``binary_conv2d``, ``binary_gemm``, ``ternary_conv2d``,
``ternary_gemm``); this module registers the two generic implementations:

* ``xnor-popcount`` (priority 1): when ``x`` is known to hold only -1/+1 (a binary activation,
  see :func:`..importer.binary_values`) and nothing is padded, the activations are bit-packed at
  run time into 32-bit words in the weights' bit order and
  ``sum(x * w) = K - 2 * popcount(xbits XOR wbits)`` (binary weights only);
* ``unpacked`` (priority 0, always applies): the weights are unpacked to int8 levels at compile
  time and the layer is an int32-accumulating conv / matmul (exact for any int8/uint8 ``x``).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto
from tvm import te, tirx

from ...export.robustq_ops import DOMAIN, OPS, unpack_weights
from .. import arith
from ..dtypes import type_name
from ..implementations import OpCall, lower, register_implementation
from ..registry import Converter, ConverterContext, const_value, register_converter, shape_of
from .conv import conv_accumulate
from .matmul import matmul_accumulate

_TYPES = (TensorProto.INT8, TensorProto.UINT8)


def _kind(op: str) -> tuple[str, str]:
    spec = OPS[op]
    return spec.weights, spec.layout


class _PackedOp(Converter):
    @classmethod
    def check(cls, ctx: ConverterContext) -> list[str]:
        problems = []
        t = ctx.in_type(0)
        if t is not None and t not in _TYPES:
            problems.append(f"{ctx.where}: activation type {type_name(t)}; supported: int8, uint8")
        return problems

    @classmethod
    def impl_v1(cls, ctx: ConverterContext, inputs):
        weights, layout = _kind(ctx.op)
        wp = const_value(inputs[1])
        if wp is None:
            from ...errors import UnsupportedError

            raise UnsupportedError(f"{ctx.where}: packed weights must be a constant")
        attrs = {"x_binary": ctx.input_is_binary(0)}
        if layout == "conv":
            attrs.update(kernel_shape=list(ctx.attr("kernel_shape")), strides=list(ctx.attr("strides", [1, 1])),
                         pads=list(ctx.attr("pads", [0, 0, 0, 0])))
        call = OpCall(f"{weights}_{'conv2d' if layout == 'conv' else 'gemm'}", ctx.bb, ctx.target,
                          {"x": inputs[0], "w": wp}, attrs)
        return lower(call)


for _name in OPS:
    register_converter(_name, domain=DOMAIN)(type(_name, (_PackedOp,), {"__doc__": f"ai.robustq {_name}"}))


# ----------------------------------------------------------------------------- unpacked (generic)


def _geometry(call: OpCall) -> dict:
    return {"strides": call.attrs["strides"], "padding": call.attrs["pads"], "dilation": [1, 1], "groups": 1}


def _unpacked(weights: str, layout: str):
    def impl(call: OpCall):
        x = call.operands["x"]
        shape = shape_of(x)
        if layout == "conv":
            kh, kw = call.attrs["kernel_shape"]
            c = shape[1]
            w = unpack_weights(weights, call.operands["w"], c * kh * kw).reshape(-1, c, kh, kw)
            return conv_accumulate(_Ctx(call), x, arith.const(w), geometry=_geometry(call))
        w = unpack_weights(weights, call.operands["w"], shape[1])
        return matmul_accumulate(_Ctx(call), x, arith.const(w.T))
    return impl


class _Ctx:
    """The part of a ConverterContext the shared accumulate helpers use."""

    def __init__(self, call: OpCall):
        self.bb = call.bb
        self.target = call.target
        self.where = call.op


for _spec in OPS.values():
    _op = f"{_spec.weights}_{'conv2d' if _spec.layout == 'conv' else 'gemm'}"
    register_implementation(_op, "unpacked", priority=0)(_unpacked(_spec.weights, _spec.layout))


# ----------------------------------------------------------------------------- XNOR + popcount


def _words(packed: np.ndarray) -> np.ndarray:
    """Packed bytes [M, B] as little-endian uint32 words [M, ceil(B/4)] (zero padded)."""
    m, b = packed.shape
    padded = np.zeros((m, -(-b // 4) * 4), np.uint8)
    padded[:, :b] = packed
    return np.ascontiguousarray(padded).view("<u4").astype(np.uint32)


def _bit(x, index, k: int, b):
    """Bit ``b`` of a packed word: 1 where the activation at flat index ``index`` is > 0."""
    one = tirx.const(1, "uint32")
    return tirx.if_then_else(index < k, tirx.Select(x > 0, one, tirx.const(0, "uint32")) << b.astype("uint32"),
                             tirx.const(0, "uint32"))


def _xnor_acc(xw, ww, k: int, shape: tuple, name: str):
    """``K - 2 * popcount(xbits XOR wbits)`` over the words; ``shape`` is the output's, with the
    output channel at position 1 and ``xw`` indexed by the other positions plus the word."""
    r = te.reduce_axis((0, ww.shape[1]), name="r")

    def differ(*i):
        return te.sum(tirx.popcount(xw[(i[0], *i[2:], r)] ^ ww[i[1], r]).astype("int32"), axis=r)

    ones = te.compute(shape, differ, name=f"{name}_differ")
    return te.compute(shape, lambda *i: tirx.const(k, "int32") - tirx.const(2, "int32") * ones[i], name=name)


@register_implementation("binary_gemm", "xnor-popcount", priority=1)
def xnor_gemm(call: OpCall):
    if not call.attrs.get("x_binary"):
        return None
    x = call.operands["x"]
    k = shape_of(x)[1]
    words = _words(call.operands["w"])

    def compute(xt, wt):
        n_words = wt.shape[1]
        b = te.reduce_axis((0, 32), name="b")
        xw = te.compute((xt.shape[0], n_words), lambda n, j: te.sum(_bit(xt[n, j * 32 + b], j * 32 + b, k, b), axis=b),
                        name="xbits")
        return _xnor_acc(xw, wt, k, (xt.shape[0], wt.shape[0]), "xnor_gemm")

    return call.bb.emit_te(compute, x, arith.const(words), primfunc_name_hint="binary_gemm_xnor")


@register_implementation("binary_conv2d", "xnor-popcount", priority=1)
def xnor_conv2d(call: OpCall):
    if not call.attrs.get("x_binary") or any(call.attrs["pads"]):
        return None
    x = call.operands["x"]
    _, c, h, w = shape_of(x)
    kh, kw = call.attrs["kernel_shape"]
    sh, sw = call.attrs["strides"]
    k = c * kh * kw
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    words = _words(call.operands["w"])

    def compute(xt, wt):
        n_words = wt.shape[1]
        b = te.reduce_axis((0, 32), name="b")

        def pack(n, y, xx, j):
            i = j * 32 + b
            ci, ki, kj = i // (kh * kw), (i // kw) % kh, i % kw
            return te.sum(_bit(xt[n, tirx.min(ci, c - 1), y * sh + ki, xx * sw + kj], i, k, b), axis=b)

        xw = te.compute((xt.shape[0], oh, ow, n_words), pack, name="xbits")
        return _xnor_acc(xw, wt, k, (xt.shape[0], wt.shape[0], oh, ow), "xnor_conv")

    return call.bb.emit_te(compute, x, arith.const(words), primfunc_name_hint="binary_conv2d_xnor")


__all__ = ["xnor_conv2d", "xnor_gemm"]
