"""Kernels of the ONNX quantization operators, with the arithmetic onnxruntime uses.

* ``QuantizeLinear``: ``y = saturate(round_half_even(x / scale) + zero_point)``, the division in
  float32 (as onnxruntime's MLAS kernel), saturation to the output type (int4/uint4 included);
  scales per tensor or per axis.
* ``DequantizeLinear``: ``y = float32(x - zero_point) * scale`` (one float32 rounding).
* ``ConvInteger`` / ``MatMulInteger``: exact ``sum((x - x_zp) * (w - w_zp))`` in int32;
  padding contributes 0 after the zero point is subtracted (onnxruntime pads with ``x_zp``).
* ``QLinearConv`` / ``QLinearMatMul`` (the QOperator form): ONNX defines their requantization
  in real numbers; onnxruntime computes ``scale = float32(float32(x_scale * w_scale) / y_scale)``
  per output channel, then ``y = saturate(round_half_even(float32(acc) * scale) + y_zp)`` in
  float32, with ``acc`` the exact int32 accumulator (bias included). This module does the same
  float32 operations in the same order, so the results are bit-identical.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ...errors import UnsupportedError
from .intmath import int_conv2d, int_matmul, wrap_int32
from .session import INT_RANGES, NP_TYPES, OpContext, reference_op


def _axis_view(v: np.ndarray, rank: int, axis: int) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 0:
        return v
    shape = [1] * rank
    shape[axis % rank] = -1
    return v.reshape(shape)


@reference_op("QuantizeLinear")
def quantize_linear(ctx: OpContext, x, scale, zero_point=None):
    if ctx.attr("block_size", 0):
        raise UnsupportedError("blocked QuantizeLinear")
    if zero_point is not None:
        out_type = ctx.input_types[2]
    else:
        out_type = ctx.attr("output_dtype", 0) or TensorProto.UINT8
    if out_type not in INT_RANGES:
        raise UnsupportedError(f"QuantizeLinear to ONNX type {out_type}")
    axis = ctx.attr("axis", 1)
    s = _axis_view(scale, x.ndim, axis).astype(np.float32)
    z = 0 if zero_point is None else _axis_view(zero_point, x.ndim, axis).astype(np.float32)
    lo, hi = INT_RANGES[out_type]
    q = np.rint(np.divide(x.astype(np.float32), s, dtype=np.float32)) + z
    ctx.out_types = [out_type]
    return np.clip(q, lo, hi).astype(NP_TYPES[out_type])


@reference_op("DequantizeLinear")
def dequantize_linear(ctx: OpContext, x, scale, zero_point=None):
    if ctx.attr("block_size", 0):
        raise UnsupportedError("blocked DequantizeLinear")
    axis = ctx.attr("axis", 1)
    xi = x.astype(np.int64)
    if zero_point is not None:
        xi = xi - _axis_view(zero_point, x.ndim, axis).astype(np.int64)
    s = _axis_view(scale, x.ndim, axis).astype(np.float32)
    return np.multiply(wrap_int32(xi).astype(np.float32), s, dtype=np.float32)


def _minus_zp(x: np.ndarray, zp, axis: int | None = None) -> np.ndarray:
    xi = np.asarray(x).astype(np.int64)
    if zp is None:
        return xi
    z = np.asarray(zp).astype(np.int64)
    if axis is not None and z.ndim == 1 and z.size > 1:
        z = _axis_view(z, xi.ndim, axis)
    return xi - z


def _conv_args(ctx: OpContext) -> dict:
    if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise UnsupportedError("auto_pad is not supported by the reference")
    return {"strides": ctx.attr("strides", [1, 1]), "pads": ctx.attr("pads", [0, 0, 0, 0]),
            "dilations": ctx.attr("dilations", [1, 1]), "group": ctx.attr("group", 1)}


@reference_op("ConvInteger")
def conv_integer(ctx: OpContext, x, w, x_zp=None, w_zp=None):
    return wrap_int32(int_conv2d(_minus_zp(x, x_zp), _minus_zp(w, w_zp, axis=0), **_conv_args(ctx)))


@reference_op("MatMulInteger")
def matmul_integer(ctx: OpContext, a, b, a_zp=None, b_zp=None):
    return wrap_int32(int_matmul(_minus_zp(a, a_zp), _minus_zp(b, b_zp, axis=-1)))


def qlinear_requantize(acc: np.ndarray, x_scale, w_scale, y_scale, y_zp, out_type: int, channel_axis: int) -> np.ndarray:
    """onnxruntime's float32 requantization of an int32 accumulator (see the module docstring)."""
    scale = np.divide(np.multiply(np.float32(x_scale), np.asarray(w_scale, np.float32), dtype=np.float32),
                      np.float32(y_scale), dtype=np.float32)
    scale = _axis_view(scale.reshape(-1) if scale.size > 1 else scale.reshape(()), acc.ndim, channel_axis)
    lo, hi = INT_RANGES[out_type]
    zp = int(np.asarray(y_zp).reshape(-1)[0])
    y = np.multiply(wrap_int32(acc).astype(np.float32), scale, dtype=np.float32)
    y = np.clip(y, np.float32(lo - zp), np.float32(hi - zp))
    return (np.rint(y).astype(np.int64) + zp).astype(NP_TYPES[out_type])


def _scalar(v, what: str):
    a = np.asarray(v)
    if a.size != 1:
        raise UnsupportedError(f"{what} must be a scalar")
    return a.reshape(())


@reference_op("QLinearConv")
def qlinear_conv(ctx: OpContext, x, xs, xz, w, ws, wz, ys, yz, b=None):
    acc = int_conv2d(_minus_zp(x, _scalar(xz, "QLinearConv x_zero_point")), _minus_zp(w, wz, axis=0), **_conv_args(ctx))
    if b is not None:
        acc = acc + b.astype(np.int64).reshape(1, -1, 1, 1)
    ctx.out_types = [ctx.input_types[7]]
    return qlinear_requantize(acc, _scalar(xs, "x_scale"), ws, _scalar(ys, "y_scale"), yz, ctx.input_types[7], 1)


@reference_op("QLinearMatMul")
def qlinear_matmul(ctx: OpContext, a, a_s, az, b, bs, bz, ys, yz):
    acc = int_matmul(_minus_zp(a, _scalar(az, "a_zero_point")), _minus_zp(b, bz, axis=-1))
    ctx.out_types = [ctx.input_types[7]]
    return qlinear_requantize(acc, _scalar(a_s, "a_scale"), np.asarray(bs).reshape(-1), _scalar(ys, "y_scale"), yz,
                              ctx.input_types[7], -1)
