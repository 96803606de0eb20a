"""The twin of standard ONNX ops: integer arithmetic with C semantics (exact, in int64,
wrapped to the tensor's width), shape ops, and the float ops of QDQ graphs and float models.

Float ``Conv`` / ``Gemm`` / ``MatMul`` / ``GlobalAveragePool`` sum in float64 and round once to
float32, as the reference does; float elementwise ops run in float32 (IEEE, the same bits as
numpy). Surrogates: integer ``Div`` differentiates as real division, ``Mod`` has zero gradient
(the remainder of a rounding; ``t - Mod(t, d)`` passes ``t`` straight through), a comparison
``a >= b`` has the gradient of a ramp ``clamp((a - b) / (2w) + 1/2, 0, 1)`` of width ``w`` (the
batch's mean ``|a - b|`` per channel), so ``Where(a >= b, hi, lo)`` (a folded sign activation)
passes a hard-tanh-like gradient.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from onnx import TensorProto, numpy_helper

from ..errors import UnsupportedError
from .ops import TwinOpContext, twin_op
from .values import BOOL, INT64, Val, const_val, float_val, int_val, is_float, ste

_F32 = torch.float32


def _grad(*vals: Val | None) -> bool:
    return any(v is not None and v.t.requires_grad for v in vals)


def _same(ctx: TwinOpContext, a: Val, b: Val) -> None:
    if a.is_int != b.is_int:
        raise UnsupportedError(f"{ctx.where}: mixed integer and float inputs (ONNX requires one type)")


def _binary(ctx: TwinOpContext, a: Val, b: Val, int_fn, float_fn, surrogate=None) -> Val:
    _same(ctx, a, b)
    if a.is_int:
        sur = (surrogate or float_fn)(a.t, b.t) if _grad(a, b) else None
        return int_val(int_fn(a.exact, b.exact), a.type, sur)
    return Val(float_fn(a.t, b.t), a.type)


@twin_op("Add")
def add(ctx, a, b):
    return _binary(ctx, a, b, torch.add, torch.add)


@twin_op("Sub")
def sub(ctx, a, b):
    return _binary(ctx, a, b, torch.sub, torch.sub)


@twin_op("Mul")
def mul(ctx, a, b):
    return _binary(ctx, a, b, torch.mul, torch.mul)


@twin_op("Div")
def div(ctx, a, b):
    return _binary(ctx, a, b, lambda x, y: torch.div(x, y, rounding_mode="trunc"), torch.div)


@twin_op("Mod")
def mod(ctx, a, b):
    _same(ctx, a, b)
    if not a.is_int or ctx.attr("fmod", 0):
        if a.is_int:
            return int_val(torch.fmod(a.exact, b.exact), a.type)
        return Val(torch.fmod(a.t, b.t).detach(), a.type)
    return int_val(torch.remainder(a.exact, b.exact), a.type)  # no surrogate: zero gradient


def _bound(v: Val | None, like: Val):
    if v is None:
        return None
    return v.exact.reshape(()) if like.is_int else v.t.reshape(()).to(like.t.dtype)


@twin_op("Clip")
def clip(ctx, x, lo=None, hi=None):
    blo, bhi = _bound(lo, x), _bound(hi, x)
    if x.is_int:
        e = x.exact
        s = x.t
        if blo is not None:
            e, s = torch.maximum(e, blo), torch.clamp(s, min=float(blo))
        if bhi is not None:
            e, s = torch.minimum(e, bhi), torch.clamp(s, max=float(bhi))
        return int_val(e, x.type, s if x.t.requires_grad else None)
    y = x.t
    if blo is not None:
        y = torch.maximum(y, blo)
    if bhi is not None:
        y = torch.minimum(y, bhi)
    return Val(y, x.type)


@twin_op("Relu")
def relu(ctx, x):
    if x.is_int:
        return int_val(torch.clamp(x.exact, min=0), x.type, torch.relu(x.t) if x.t.requires_grad else None)
    return Val(torch.relu(x.t), x.type)


@twin_op("Identity", "Dropout")
def identity(ctx, x, *rest):
    return x


@twin_op("Cast")
def cast(ctx, x):
    to = ctx.attr("to")
    if is_float(to):
        dtype = torch.float64 if to == TensorProto.DOUBLE else _F32
        if x.is_int:
            return Val(ste(x.exact.to(dtype), x.t if x.t.requires_grad else None, dtype), to)
        return Val(x.t.to(dtype), to)
    if to == BOOL:
        return int_val(exact_or_trunc(x) != 0, BOOL)
    if to not in (*_INT_TYPES, INT64):
        raise UnsupportedError(f"{ctx.where}: Cast to ONNX type {to}")
    return int_val(exact_or_trunc(x), to, x.t if x.t.requires_grad else None)


_INT_TYPES = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32,
              TensorProto.UINT32, TensorProto.INT4, TensorProto.UINT4)


def exact_or_trunc(x: Val) -> torch.Tensor:
    """int64 of a value: the exact integer, or a float truncated toward zero (a C cast)."""
    return x.exact if x.is_int else torch.trunc(x.t.detach()).to(torch.int64)


@twin_op("Constant")
def constant(ctx, *_):
    if "value" not in ctx.cache:
        v = ctx.attr("value")
        if v is not None:
            ctx.cache["value"] = const_val(numpy_helper.to_array(v), v.data_type)
        else:
            for name, tp in (("value_ints", INT64), ("value_int", INT64), ("value_floats", TensorProto.FLOAT),
                             ("value_float", TensorProto.FLOAT)):
                if name in ctx.attrs:
                    ctx.cache["value"] = const_val(np.asarray(ctx.attrs[name]), tp)
                    break
            else:
                raise UnsupportedError(f"{ctx.where}: Constant without a supported value attribute")
    return ctx.cache["value"]


def _ints(v: Val) -> list[int]:
    return [int(i) for i in v.exact.reshape(-1).tolist()]


def _map(x: Val, fn) -> Val:
    """Apply a shape op to the value (and its exact copy)."""
    return Val(fn(x.t), x.type, None if x.exact is None else fn(x.exact))


@twin_op("Shape")
def shape(ctx, x):
    dims = list(x.shape)[ctx.attr("start", 0):ctx.attr("end", None)]
    return int_val(torch.tensor(dims, dtype=torch.int64), INT64)


@twin_op("Reshape")
def reshape(ctx, x, shp):
    target = _ints(shp)
    if not ctx.attr("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return _map(x, lambda t: t.reshape(target))


@twin_op("Flatten")
def flatten(ctx, x):
    axis = ctx.attr("axis", 1) % max(x.t.ndim, 1)
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return _map(x, lambda t: t.reshape(lead, -1))


@twin_op("Transpose")
def transpose(ctx, x):
    perm = ctx.attr("perm") or list(reversed(range(x.t.ndim)))
    return _map(x, lambda t: t.permute(*perm))


def _axes(ctx: TwinOpContext, axes: Val | None) -> list[int] | None:
    if axes is not None:
        return _ints(axes)
    a = ctx.attr("axes")
    return list(a) if a is not None else None


@twin_op("Unsqueeze")
def unsqueeze(ctx, x, axes=None):
    ax = _axes(ctx, axes)
    rank = x.t.ndim + len(ax)

    def fn(t):
        for a in sorted(i % rank for i in ax):
            t = t.unsqueeze(a)
        return t
    return _map(x, fn)


@twin_op("Squeeze")
def squeeze(ctx, x, axes=None):
    ax = _axes(ctx, axes)
    if ax is None:
        ax = [i for i, d in enumerate(x.shape) if d == 1]
    ax = sorted((i % x.t.ndim for i in ax), reverse=True)

    def fn(t):
        for a in ax:
            t = t.squeeze(a)
        return t
    return _map(x, fn)


@twin_op("Concat")
def concat(ctx, *xs):
    axis = ctx.attr("axis")
    if any(x.is_int != xs[0].is_int for x in xs):
        raise UnsupportedError(f"{ctx.where}: mixed integer and float inputs")
    t = torch.cat([x.t for x in xs], dim=axis)
    return Val(t, xs[0].type, torch.cat([x.exact for x in xs], dim=axis) if xs[0].is_int else None)


@twin_op("Gather")
def gather(ctx, x, idx):
    axis = ctx.attr("axis", 0) % x.t.ndim
    i = idx.exact
    i = torch.where(i < 0, i + x.shape[axis], i)

    def fn(t):
        out = torch.index_select(t, axis, i.reshape(-1))
        return out.reshape(*t.shape[:axis], *i.shape, *t.shape[axis + 1:])
    return _map(x, fn)


@twin_op("Slice")
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    st, en = _ints(starts), _ints(ends)
    ax = range(len(st)) if axes is None else [a % x.t.ndim for a in _ints(axes)]
    sp = [1] * len(st) if steps is None else _ints(steps)
    if any(s <= 0 for s in sp):
        raise UnsupportedError(f"{ctx.where}: Slice with a non-positive step")
    index = [slice(None)] * x.t.ndim
    for a, s, e, k in zip(ax, st, en, sp):
        index[a] = slice(s, e, k)
    return _map(x, lambda t: t[tuple(index)])


def _reduce_axes(ctx, x: Val, axes: Val | None):
    ax = _axes(ctx, axes)
    if not ax:
        return None if not ctx.attr("noop_with_empty_axes", 0) else ()
    return tuple(a % x.t.ndim for a in ax)


@twin_op("ReduceSum")
def reduce_sum(ctx, x, axes=None):
    ax = _reduce_axes(ctx, x, axes)
    keep = bool(ctx.attr("keepdims", 1))
    if ax == ():
        return x
    dims = ax if ax is not None else tuple(range(x.t.ndim))
    if x.is_int:
        return int_val(x.exact.sum(dim=dims, keepdim=keep), x.type, x.t.sum(dim=dims, keepdim=keep))
    return Val(x.t.sum(dim=dims, keepdim=keep), x.type)


@twin_op("ReduceMean")
def reduce_mean(ctx, x, axes=None):
    ax = _reduce_axes(ctx, x, axes)
    dims = ax if ax is not None else tuple(range(x.t.ndim))
    return float_val(x.t.to(torch.float64).mean(dim=dims, keepdim=bool(ctx.attr("keepdims", 1))), x.type)


def _comparison(op):
    def run(ctx, a, b):
        _same(ctx, a, b)
        ea, eb = (a.exact, b.exact) if a.is_int else (a.t, b.t)
        exact = op(ea, eb)
        sur = None
        if _grad(a, b) and op in (torch.ge, torch.gt, torch.le, torch.lt):
            d = a.t.to(torch.float64) - b.t.to(torch.float64)
            if op in (torch.le, torch.lt):
                d = -d
            dims = [i for i in range(d.ndim) if i != 1] if d.ndim > 1 else [0]
            w = d.detach().abs().mean(dim=dims, keepdim=True).clamp(min=1e-6)
            sur = torch.clamp(d / (2 * w) + 0.5, 0.0, 1.0)
        return int_val(exact.to(torch.int64), BOOL, sur)
    return run


for _name, _op in (("Greater", torch.gt), ("GreaterOrEqual", torch.ge), ("Less", torch.lt),
                   ("LessOrEqual", torch.le), ("Equal", torch.eq)):
    twin_op(_name)(_comparison(_op))


@twin_op("And")
def and_(ctx, a, b):
    return int_val(a.exact & b.exact, BOOL)


@twin_op("Not")
def not_(ctx, a):
    return int_val(1 - a.exact, BOOL)


@twin_op("Where")
def where(ctx, cond, a, b):
    _same(ctx, a, b)
    c = cond.exact.bool()
    if a.is_int:
        exact = torch.where(c, a.exact, b.exact)
        sur = b.t + (a.t - b.t) * cond.t if _grad(cond, a, b) else None
        return int_val(exact, a.type, sur)
    out = torch.where(c, a.t, b.t)
    if cond.t.requires_grad:
        sur = b.t + (a.t - b.t) * cond.t.to(a.t.dtype)
        out = out + (sur - sur.detach())
    return Val(out, a.type)


@twin_op("BitShift")
def bit_shift(ctx, x, s):
    e = x.exact << s.exact if ctx.attr("direction") != "RIGHT" else x.exact >> s.exact
    return int_val(e, x.type)


@twin_op("BitwiseAnd")
def bitwise_and(ctx, a, b):
    return int_val(a.exact & b.exact, a.type)


def _pads(ctx: TwinOpContext, n: int = 2) -> list[int]:
    if ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise UnsupportedError(f"{ctx.where}: auto_pad is not supported")
    return list(ctx.attr("pads", [0] * (2 * n)))


def pad2d(t: torch.Tensor, pads: list[int], value: float = 0.0) -> torch.Tensor:
    """ONNX pads ``[top, left, bottom, right]`` on an NCHW tensor."""
    top, left, bottom, right = pads
    if not any(pads):
        return t
    return F.pad(t, (left, right, top, bottom), value=value)


@twin_op("MaxPool")
def max_pool(ctx, x):
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise UnsupportedError(f"{ctx.where}: MaxPool with an Indices output")
    if ctx.attr("ceil_mode", 0) or any(d != 1 for d in ctx.attr("dilations", [1, 1])):
        raise UnsupportedError(f"{ctx.where}: MaxPool with ceil_mode or dilation")
    k = ctx.attr("kernel_shape")
    s = ctx.attr("strides", [1, 1])
    t = F.max_pool2d(pad2d(x.t, _pads(ctx), float("-inf")), k, s)
    if x.is_int:
        return Val(t, x.type, t.detach().to(torch.int64))
    return Val(t, x.type)


@twin_op("AveragePool")
def average_pool(ctx, x):
    if ctx.attr("ceil_mode", 0):
        raise UnsupportedError(f"{ctx.where}: AveragePool with ceil_mode")
    pads = _pads(ctx)
    k, s = ctx.attr("kernel_shape"), ctx.attr("strides", [1, 1])
    t = x.t.to(torch.float64)
    if ctx.attr("count_include_pad", 0) or not any(pads):
        y = F.avg_pool2d(pad2d(t, pads), k, s)
    else:  # average over the real pixels of each window
        ones = pad2d(torch.ones_like(t[:1, :1]), pads)
        y = F.avg_pool2d(pad2d(t, pads), k, s) / F.avg_pool2d(ones, k, s)
    return float_val(y, x.type)


@twin_op("GlobalAveragePool")
def global_average_pool(ctx, x):
    return float_val(x.t.to(_acc_dtype(ctx)).mean(dim=(2, 3), keepdim=True), x.type)


@twin_op("Conv")
def conv(ctx, x, w, b=None):
    if x.is_int:
        raise UnsupportedError(f"{ctx.where}: integer Conv (use ConvInteger)")
    y = conv64(ctx, x.t, w.t)
    if b is not None:
        y = y + b.t.to(y.dtype).reshape(1, -1, 1, 1)
    return float_val(y, x.type)


def _acc_dtype(ctx: TwinOpContext) -> torch.dtype:
    """Where float sums run: float64 like the reference, float32 in a fast twin."""
    return torch.float32 if ctx.fast else torch.float64


def conv64(ctx: TwinOpContext, x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Convolution with the node's attributes, computed in ``dtype`` (default: the float sums'
    precision; zero padding)."""
    dtype = dtype or _acc_dtype(ctx)
    pads = _pads(ctx)
    dil = ctx.attr("dilations", [1, 1])
    return F.conv2d(pad2d(x.to(dtype), pads), w.to(dtype), stride=ctx.attr("strides", [1, 1]), dilation=dil,
                    groups=ctx.attr("group", 1))


@twin_op("Gemm")
def gemm(ctx, a, b, c=None):
    dt = _acc_dtype(ctx)
    at = a.t.to(dt)
    bt = b.t.to(dt)
    at = at.T if ctx.attr("transA", 0) else at
    bt = bt.T if ctx.attr("transB", 0) else bt
    y = at @ bt
    if ctx.attr("alpha", 1.0) != 1.0:
        y = ctx.attr("alpha", 1.0) * y
    if c is not None:
        y = y + ctx.attr("beta", 1.0) * c.t.to(dt)
    return float_val(y, a.type)


@twin_op("MatMul")
def matmul(ctx, a, b):
    dt = _acc_dtype(ctx)
    return float_val(a.t.to(dt) @ b.t.to(dt), a.type)


@twin_op("BatchNormalization")
def batch_norm(ctx, x, scale, bias, mean, var):
    eps = ctx.attr("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.t.ndim - 2)
    inv = (scale.t / torch.sqrt(var.t + eps)).reshape(shape)
    return Val((x.t - mean.t.reshape(shape)) * inv + bias.t.reshape(shape), x.type)


@twin_op("Sigmoid")
def sigmoid(ctx, x):
    return Val(torch.sigmoid(x.t), x.type)


@twin_op("Tanh")
def tanh(ctx, x):
    return Val(torch.tanh(x.t), x.type)


@twin_op("LeakyRelu")
def leaky_relu(ctx, x):
    return Val(F.leaky_relu(x.t, ctx.attr("alpha", 0.01)), x.type)


@twin_op("Softmax")
def softmax(ctx, x):
    return Val(torch.softmax(x.t, dim=ctx.attr("axis", -1)), x.type)


@twin_op("LogSoftmax")
def log_softmax(ctx, x):
    return Val(torch.log_softmax(x.t, dim=ctx.attr("axis", -1)), x.type)


@twin_op("ArgMax")
def argmax(ctx, x):
    y = x.t.argmax(dim=ctx.attr("axis", 0), keepdim=bool(ctx.attr("keepdims", 1)))
    return int_val(y, INT64)


__all__ = ["conv64", "exact_or_trunc", "pad2d"]
