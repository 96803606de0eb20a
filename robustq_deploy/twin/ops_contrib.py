"""The twin of onnxruntime's ``com.microsoft`` quantized ops, following its x86 CPU kernels
(the numpy reference does not define these ops; onnxruntime is their semantics).

* ``QLinearAdd`` (MLAS ``qladd``): ``rA = sA / sC``, ``rB = sB / sC``,
  ``fixed = zC - (rA * zA + rB * zB)``, ``C = saturate(rint((fixed + A * rA) + B * rB))`` in
  float32 (the B term first when B is a single element).
* ``QLinearMul`` (MLAS ``qlmul``): ``saturate(rint(float32((A - zA) * (B - zB)) * (sA * sB / sC) + zC))``.
* ``QGemm``: ``(A - zA) @ (B - zB) + C`` in int32, multiplier ``alpha * sA * sB [/ sY]`` in
  float32; a float output without ``y_scale``, else onnxruntime's QLinear rescale.
* ``QLinearGlobalAveragePool`` (MLAS, x86): ``acc = sum(X) - zX * HW``,
  ``saturate(rint(clamp(float32(acc) * sX / (sY * HW))) + zY)``.
* ``QLinearAveragePool``: dequantize ``sX * (X - zX)``, float32 sum of each window in row-major
  order, divide by the count, ``saturate(rint(y / sY + zY))``.
* ``QLinearConcat``, ``QLinearSigmoid``, ``QLinearLeakyRelu``: a 256-entry table per input,
  ``quantize(f(sX * (x - zX)))`` (onnxruntime's ``QlinearBuildLookupTable``); the sigmoid is
  MLAS's own polynomial (:func:`robustq_deploy.mlas.mlas_logistic`, the x86 FMA3 kernel), as in the
  compiled module.
* ``QLinearSoftmax``: onnxruntime's exponential table
  (:func:`robustq_deploy.mlas.qlinear_softmax_table`) read at ``255 - (row max - x)``, the row
  summed in float32 in index order, ``saturate(rint(double(e) * floor(1 / sY) / double(sum)) +
  zY)`` in double; rows are ``axis`` (opset >= 13) or every axis from ``axis`` on (opset < 13),
  ``axis`` -1 by default. Surrogate: ``softmax`` of the dequantized row times ``floor(1 / sY)``.

Surrogates are the real-valued ops on the dequantized inputs, clamped to the output range.
Broadcasting in ``QLinearAdd`` / ``QLinearMul`` other than equal shapes or a single-element operand
sums in the same order, which onnxruntime may not (one level at a float32 near-tie).
"""
from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto

from ..errors import UnsupportedError
from ..mlas import mlas_logistic, qlinear_softmax_table
from .ops import TwinOpContext, twin_op
from .ops_quant import axis_view, centered, float_requantize, int_matmul
from .ops_standard import pad2d
from .values import Val, int_range, int_val, wrap

MS = "com.microsoft"
_F32 = torch.float32


def _s(v: Val) -> torch.Tensor:
    return v.t.to(_F32).reshape(())


def _z(v: Val | None) -> int:
    return 0 if v is None else int(v.exact.reshape(-1)[0])


def _saturate(ctx: TwinOpContext, y: torch.Tensor, sur: torch.Tensor | None, out_type: int) -> Val:
    lo, hi = int_range(out_type)
    exact = torch.clamp(torch.round(y), lo, hi).to(torch.int64)
    return int_val(exact, out_type, None if sur is None else torch.clamp(sur, lo, hi))


def _real(v: Val, zp: int, scale: torch.Tensor) -> torch.Tensor:
    return (v.t.to(torch.float64) - zp) * scale.to(torch.float64)


@twin_op("QLinearAdd", domain=MS)
def qlinear_add(ctx, a, sa, za, b, sb, zb, sc, zc=None):
    ra, rb = _s(sa) / _s(sc), _s(sb) / _s(sc)
    fixed = torch.tensor(float(_z(zc)), dtype=_F32) - (ra * float(_z(za)) + rb * float(_z(zb)))
    af, bf = a.exact.to(_F32), b.exact.to(_F32)
    if b.t.numel() == 1 and a.t.numel() != 1:
        y = (fixed + bf * rb) + af * ra
    else:
        y = (fixed + af * ra) + bf * rb
    sur = None
    if a.t.requires_grad or b.t.requires_grad:
        sur = (_real(a, _z(za), _s(sa)) + _real(b, _z(zb), _s(sb))) / _s(sc).double() + _z(zc)
    return _saturate(ctx, y, sur, a.type)


@twin_op("QLinearMul", domain=MS)
def qlinear_mul(ctx, a, sa, za, b, sb, zb, sc, zc=None):
    ratio = (_s(sa) * _s(sb)) / _s(sc)
    acc = (a.exact - _z(za)) * (b.exact - _z(zb))
    y = acc.to(_F32) * ratio + torch.tensor(float(_z(zc)), dtype=_F32)
    sur = None
    if a.t.requires_grad or b.t.requires_grad:
        sur = _real(a, _z(za), _s(sa)) * _real(b, _z(zb), _s(sb)) / _s(sc).double() + _z(zc)
    return _saturate(ctx, y, sur, a.type)


@twin_op("QGemm", domain=MS)
def qgemm(ctx, a, a_s, az, b, b_s, bz, c=None, y_s=None, yz=None):
    if ctx.attr("transA", 0):
        a = Val(a.t.T, a.type, a.exact.T)
    if ctx.attr("transB", 0):
        b = Val(b.t.T, b.type, b.exact.T)
    acc = int_matmul(centered(a, az), centered(b, bz, axis=-1))
    if c is not None:
        acc = Val(acc.t + c.t, acc.type, wrap(acc.exact + c.exact, TensorProto.INT32))
    alpha = float(ctx.attr("alpha", 1.0))
    m = _s(a_s) if alpha == 1.0 else torch.tensor(alpha, dtype=_F32) * _s(a_s)
    m = m * b_s.t.to(_F32).reshape(-1)
    if y_s is None:
        exact = acc.exact.to(_F32) * axis_view(m, acc.t.ndim, -1)
        sur = acc.t * axis_view(m, acc.t.ndim, -1).double() if acc.t.requires_grad else None
        out = exact if sur is None else exact + (sur - sur.detach()).to(_F32)
        return Val(out, TensorProto.FLOAT)
    return float_requantize(acc, m / _s(y_s), yz, yz.type if yz is not None else TensorProto.UINT8, -1)


@twin_op("QLinearGlobalAveragePool", domain=MS)
def qlinear_global_average_pool(ctx, x, xs, xz, ys, yz):
    last = bool(ctx.attr("channels_last", 0))
    dims = (1, 2) if last else (2, 3)
    hw = int(np.prod([x.shape[d] for d in dims]))
    acc_exact = x.exact.sum(dim=dims, keepdim=True) - _z(xz) * hw
    scale = _s(xs) / (_s(ys) * torch.tensor(float(hw), dtype=_F32))
    out_type = yz.type if yz is not None else x.type
    lo, hi = int_range(out_type)
    zy = _z(yz)
    y = torch.clamp(acc_exact.to(_F32) * scale, float(lo - zy), float(hi - zy))
    exact = torch.round(y).to(torch.int64) + zy
    sur = None
    if x.t.requires_grad:
        sur = torch.clamp((x.t.sum(dim=dims, keepdim=True) - _z(xz) * hw) * scale.double(), lo - zy, hi - zy) + zy
    return int_val(exact, out_type, sur)


@twin_op("QLinearAveragePool", domain=MS)
def qlinear_average_pool(ctx, x, xs, xz, ys, yz=None):
    if ctx.attr("ceil_mode", 0) or ctx.attr("channels_last", 0):
        raise UnsupportedError(f"{ctx.where}: QLinearAveragePool with ceil_mode or channels_last")
    if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise UnsupportedError(f"{ctx.where}: auto_pad is not supported")
    kh, kw = ctx.attr("kernel_shape")
    sh, sw = ctx.attr("strides", [1, 1])
    pads = list(ctx.attr("pads", [0, 0, 0, 0]))
    deq = _s(xs) * (x.exact - _z(xz)).to(_F32)
    xp = pad2d(deq, pads)
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    total = None
    for i in range(kh):  # float32, one window position at a time in row-major order (zeros for padding)
        for j in range(kw):
            part = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            total = part.clone() if total is None else total + part
    ones = pad2d(torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=_F32), pads)
    if ctx.attr("count_include_pad", 0):
        count = torch.full((1, 1, oh, ow), float(kh * kw), dtype=_F32)
    else:
        count = torch.nn.functional.avg_pool2d(ones, (kh, kw), (sh, sw)) * (kh * kw)
    y = (total / count) / _s(ys) + torch.tensor(float(_z(yz)), dtype=_F32)
    sur = None
    if x.t.requires_grad:
        real = pad2d(_real(x, _z(xz), _s(xs)), pads)
        avg = torch.nn.functional.avg_pool2d(real, (kh, kw), (sh, sw)) * (kh * kw) / count.double()
        sur = avg / _s(ys).double() + _z(yz)
    return _saturate(ctx, y, sur, yz.type if yz is not None else x.type)


def _table(x_type: int, xs: torch.Tensor, xz: int, ys: torch.Tensor, yz: int, out_type: int, fn) -> torch.Tensor:
    """onnxruntime's lookup table: entry for every value of ``x_type``, indexed by ``value - min``."""
    lo_x, hi_x = int_range(x_type)
    values = torch.arange(lo_x, hi_x + 1, dtype=torch.int64)
    real = xs * (values - xz).to(_F32)
    lo, hi = int_range(out_type)
    return torch.clamp(torch.round(fn(real) / ys) + yz, lo, hi).to(torch.int64)


def _lookup(ctx: TwinOpContext, key: str, x: Val, xs: Val, xz: Val | None, ys: Val, yz: Val | None, fn, real_fn) -> Val:
    out_type = yz.type if yz is not None else x.type
    if key not in ctx.cache:
        ctx.cache[key] = _table(x.type, _s(xs), _z(xz), _s(ys), _z(yz), out_type, fn)
    exact = ctx.cache[key][x.exact - int_range(x.type)[0]]
    sur = None
    if x.t.requires_grad:
        lo, hi = int_range(out_type)
        sur = torch.clamp(real_fn(_real(x, _z(xz), _s(xs))) / _s(ys).double() + _z(yz), lo, hi)
    return int_val(exact, out_type, sur)


def _sigmoid32(v: torch.Tensor) -> torch.Tensor:
    """onnxruntime's float32 logistic (MLAS's polynomial, the compiled table's too)."""
    return torch.from_numpy(mlas_logistic(v.detach().to(_F32).cpu().numpy()))


@twin_op("QLinearSigmoid", domain=MS)
def qlinear_sigmoid(ctx, x, xs, xz, ys, yz=None):
    return _lookup(ctx, "table", x, xs, xz, ys, yz, _sigmoid32, torch.sigmoid)


@twin_op("QLinearLeakyRelu", domain=MS)
def qlinear_leaky_relu(ctx, x, xs, xz, ys, yz=None):
    alpha = float(ctx.attr("alpha", 0.01))
    a32 = torch.tensor(alpha, dtype=_F32)

    def fn(v):
        return torch.where(v >= 0, v, v * a32)
    return _lookup(ctx, "table", x, xs, xz, ys, yz, fn, lambda v: torch.nn.functional.leaky_relu(v, alpha))


@twin_op("QLinearConcat", domain=MS)
def qlinear_concat(ctx, ys, yz, *triples):
    axis = ctx.attr("axis")
    parts = []
    for k in range(0, len(triples), 3):
        x, xs, xz = triples[k:k + 3]
        same = float(_s(xs)) == float(_s(ys)) and _z(xz) == _z(yz)
        parts.append(x if same else _lookup(ctx, f"table{k}", x, xs, xz, ys, yz, lambda v: v, lambda v: v))
    t = torch.cat([p.t for p in parts], dim=axis)
    return Val(t, parts[0].type, torch.cat([p.exact for p in parts], dim=axis))


@twin_op("QLinearSoftmax", domain=MS)
def qlinear_softmax(ctx, x, xs, xz, ys, yz=None):
    out_type = yz.type if yz is not None else x.type
    shape = x.exact.shape
    rank = len(shape)
    opset = int(ctx.attr("opset", 13))
    axis = int(ctx.attr("axis", -1)) % rank
    rows = x.exact.reshape(*shape[:axis], -1) if opset < 13 else x.exact
    d = rows.shape[axis]
    key = f"softmax-table-{d}"
    if key not in ctx.cache:
        ctx.cache[key] = torch.from_numpy(qlinear_softmax_table(float(_s(xs)), d))
    e = ctx.cache[key][255 - (rows.amax(axis, keepdim=True) - rows)]
    total = torch.zeros_like(e.select(axis, 0))
    for k in range(d):  # float32, in index order
        total = total + e.select(axis, k)
    y_scale = float(np.floor(np.float32(1.0) / np.float32(float(_s(ys)))))
    lo, hi = int_range(out_type)
    q = torch.round(e.double() * y_scale / total.unsqueeze(axis).double()) + _z(yz)
    exact = torch.clamp(q, lo, hi).to(torch.int64).reshape(shape)
    sur = None
    if x.t.requires_grad:
        real = _real(x, _z(xz), _s(xs))
        real = real.reshape(*shape[:axis], -1) if opset < 13 else real
        sur = torch.clamp(torch.softmax(real, axis) * y_scale + _z(yz), lo, hi).reshape(shape)
    return int_val(exact, out_type, sur)


__all__ = ["MS"]


