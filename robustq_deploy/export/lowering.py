"""Integer lowering shared by the ``integer``, ``qoperator`` and ``packed`` export forms.

Every value between the input quantizer and the output is an :class:`IntValue`: an int32
accumulator with a real scale (per tensor, or per channel on axis 1) plus the *pending* work
that its consumer must apply: a clamp (ReLU, ReLU6, hardtanh: folded into the requantization's
integer clamp, :func:`.common.clamp_levels`), max pooling and flatten (applied to the 8-bit
tensor after requantization, since both commute with a monotone requantization), or a BatchNorm
(folded with the consumer's sign into integer thresholds, :mod:`.bnfold`).

Operators that own an input grid (:class:`~robustq_deploy.quant.QAdd`,
:class:`~robustq_deploy.quant.QConcat`, :class:`~robustq_deploy.quant.QAvgPool2d`) bring each input
onto that grid and produce an exact int32 value again: the sum, the concatenation, the window
sum (a ConvInteger with an all-ones depthwise kernel, or a ReduceSum for global pooling; the
division by the window size joins the consumer's multiplier).

The **consumer requantizes** (docs/architecture.md): a quantized layer calls :func:`to_grid`,
which brings the producer's accumulator onto the layer's input grid with the fixed-point chain of
:mod:`.requant` (or the thresholds of a binary input), then applies the pending pooling. The
graph input is quantized by a QuantizeLinear; the output accumulator is dequantized to float
logits by ``DequantizeLinear(int32)`` as ``float32(acc) * float32(scale)``. Nothing in between is
float.

A producer may also be *lazy* (:class:`LazyProducer`): the ``qoperator`` form emits a layer only
once its consumer's grid is known, as a QLinearConv / QLinearMatMul when the runtime op can
produce that grid, else as the integer accumulator.

To support another module: register a handler for each integer format in :func:`register_structural`
(or a format module) that maps its input ``IntValue`` to an output ``IntValue``, and a ``check``
that reports what it cannot lower.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import ml_dtypes
import numpy as np
from onnx import TensorProto
from torch import fx, nn

from ..dtypes import int_range
from ..errors import UnsupportedError
from ..quant import QAdd, QAvgPool2d, QConcat, QConv2d, QUANT_LAYERS
from ..quant.modules import ActQuantizer
from .bnfold import INT32_MAX, INT32_MIN, sign_thresholds
from .common import (base_name, check_avgpool, check_clamp, check_flatten, check_maxpool, clamp_bounds, clamp_levels,
                     conv_attrs, maxpool_attrs, pair)
from .graph import GraphBuilder
from .registry import _CLAMP, _FLATTEN, _MAXPOOL, _RELU, ExportContext, node_key, register_handler
from .requant import channel_shape, emit_requantize

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_AVGPOOL = (nn.AdaptiveAvgPool2d,)
_TRANSPARENT = (*_RELU, *_CLAMP, *_MAXPOOL, *_FLATTEN)
NO_CLAMP = (-math.inf, math.inf)
RELU = (0.0, math.inf)


@dataclass(frozen=True)
class Grid:
    """An activation quantizer's integer grid: ``real = q * scale``, ``q in [qmin, qmax]``."""

    scale: float  # a float32 value
    qmin: int
    qmax: int
    dtype: str  # "uint8" or "int8" storage
    binary: bool = False

    @classmethod
    def of(cls, q: ActQuantizer) -> "Grid":
        qp = q.qparams()
        return cls(float(np.float32(qp["scale"])), qp["qmin"], qp["qmax"], qp["dtype"], qp["bits"] == "binary")


@dataclass(frozen=True)
class PostOp:
    """An op on the quantized tensor that commutes with requantization (max pool, flatten)."""

    op: str
    attrs: tuple[tuple[str, Any], ...] = ()

    def emit(self, b: GraphBuilder, x: str, name: str) -> str:
        return b.node(self.op, [x], name=name, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.attrs})[0]

    def out_rank(self, rank: int) -> int:
        return 2 if self.op == "Flatten" else rank


class LazyProducer(Protocol):
    """A layer whose emission waits for its consumer (the ``qoperator`` form)."""

    def emit_acc(self, ctx: ExportContext) -> str: ...

    def emit_quantized(self, ctx: ExportContext, grid: Grid, clamp: tuple[float, float]) -> str | None: ...


@dataclass(frozen=True, eq=False)
class FloatInput:
    """The float graph input, before the first quantizer."""

    name: str
    rank: int


@dataclass(frozen=True, eq=False)
class IntValue:
    """An int32 accumulator ``acc`` with real value ``acc * scale`` and its pending ops."""

    name: str | None  # None while ``lazy`` has not been emitted
    scale: np.ndarray  # float32, shape () or (C,) on axis 1
    rank: int  # rank of the accumulator tensor
    base: str  # stem for emitted names
    clamp: tuple[float, float] = NO_CLAMP  # real bounds of pending ReLU / clamps
    post: tuple[PostOp, ...] = ()
    bn: nn.Module | None = None
    lazy: LazyProducer | None = None

    def but(self, **changes) -> "IntValue":
        return dataclasses.replace(self, **changes)

    def clamped(self, bounds: tuple[float, float]) -> "IntValue":
        """This value after one more clamp (clamps compose by intersecting their bounds)."""
        return self.but(clamp=(max(self.clamp[0], bounds[0]), min(self.clamp[1], bounds[1])))


# ----------------------------------------------------------------------------- consumers


def accumulator_core(ctx: ExportContext, v: IntValue) -> str:
    """The int32 accumulator itself (pending ops not applied); emits a lazy producer once."""
    if v.lazy is None:
        return v.name
    key = ("acc", v.lazy)  # the key holds the object, so its identity cannot be reused
    if key not in ctx.cache:
        ctx.cache[key] = v.lazy.emit_acc(ctx)
    return ctx.cache[key]


def accumulator(ctx: ExportContext, v: IntValue | FloatInput, base: str) -> tuple[str, int]:
    """The int32 tensor with ReLU and flatten applied, for consumers that need the accumulator
    itself (the output dequantizer, average pooling of the accumulator)."""
    if isinstance(v, FloatInput):
        raise UnsupportedError(f"{base}: needs a quantized value, got the float model input")
    if v.bn is not None:
        raise UnsupportedError(f"{base}: a BatchNorm output must feed a binary activation")
    key = ("accum", v)
    if key not in ctx.cache:
        acc, rank = accumulator_core(ctx, v), v.rank
        if v.clamp not in (NO_CLAMP, RELU):
            raise UnsupportedError(f"{base}: a clamp other than ReLU on an int32 accumulator is not supported")
        if v.clamp == RELU:
            (acc,) = ctx.b.node("Relu", [acc], name=f"{base}_relu")
        for i, op in enumerate(v.post):
            if op.op == "MaxPool":  # ONNX MaxPool has no int32 form
                raise UnsupportedError(f"{base}: max pooling of an int32 accumulator is not supported")
            acc = op.emit(ctx.b, acc, f"{base}_{op.op.lower()}{i}")
            rank = op.out_rank(rank)
        ctx.cache[key] = (acc, rank)
    return ctx.cache[key]


def to_grid(ctx: ExportContext, v: IntValue | FloatInput, grid: Grid, base: str) -> tuple[str, int]:
    """``v`` quantized onto ``grid`` as an 8-bit tensor (pending ops applied); returns (name, rank)."""
    key = ("grid", v, grid)
    if key not in ctx.cache:
        if isinstance(v, FloatInput):
            ctx.cache[key] = (_quantize_float(ctx, v, grid, base), v.rank)
        else:
            ctx.cache[key] = _requantize(ctx, v, grid, base)
    return ctx.cache[key]


def _quantize_float(ctx: ExportContext, v: FloatInput, grid: Grid, base: str) -> str:
    if grid.binary:
        raise UnsupportedError(f"{base}: a binary quantizer on the float model input is not supported")
    b = ctx.b
    s = b.initializer(f"{base}_x_scale", np.array(grid.scale, np.float32))
    z = b.initializer(f"{base}_x_zero_point", np.array(0, grid.dtype))
    (x,) = b.node("QuantizeLinear", [v.name, s, z], name=f"{base}_quant_in")
    lo, hi = int_range(grid.dtype)
    if (grid.qmin, grid.qmax) != (lo, hi):  # narrower grids (4-bit, narrow signed) saturate further
        (x,) = b.node("Clip", [x, b.const(grid.qmin, grid.dtype), b.const(grid.qmax, grid.dtype)], name=f"{base}_clip_in")
    return x


def _requantize(ctx: ExportContext, v: IntValue, grid: Grid, base: str) -> tuple[str, int]:
    b = ctx.b
    x = None
    if v.lazy is not None and v.bn is None and not grid.binary:
        x = v.lazy.emit_quantized(ctx, grid, v.clamp)
    if x is None:
        acc = accumulator_core(ctx, v)
        if grid.binary:
            if v.bn is not None:
                lo, hi = sign_thresholds(v.bn, v.scale)
            else:  # sign of the real value is the sign of acc (scales are positive); relu -> all +1
                if v.clamp[1] < 0:
                    raise UnsupportedError(f"{base}: a clamp below zero before a binary activation")
                lo, hi = np.array(INT32_MIN if v.clamp[0] >= 0 else 0, np.int32), np.array(INT32_MAX, np.int32)
            x = emit_sign_threshold(b, acc, lo, hi, v.rank, base)
        else:
            if v.bn is not None:
                raise UnsupportedError(f"{base}: a BatchNorm output must feed a binary activation")
            qmin, qmax = clamp_levels(v.clamp, grid.scale, grid.qmin, grid.qmax)
            x = emit_requantize(b, acc, v.scale, grid.scale, qmin, qmax, grid.dtype, v.rank, base)
    rank = v.rank
    for i, op in enumerate(v.post):
        x = op.emit(b, x, f"{base}_{op.op.lower()}{i}")
        rank = op.out_rank(rank)
    return x, rank


def emit_sign_threshold(b: GraphBuilder, acc: str, lo: np.ndarray, hi: np.ndarray, rank: int, base: str) -> str:
    """int8 ``+1`` where ``lo <= acc <= hi`` (per channel), ``-1`` elsewhere."""
    (cond,) = b.node("GreaterOrEqual", [acc, b.initializer(f"{base}_th_lo", channel_shape(lo, rank).astype(np.int32))],
                     name=f"{base}_th_ge")
    if np.any(np.asarray(hi) < INT32_MAX):
        (le,) = b.node("LessOrEqual", [acc, b.initializer(f"{base}_th_hi", channel_shape(hi, rank).astype(np.int32))],
                       name=f"{base}_th_le")
        (cond,) = b.node("And", [cond, le], name=f"{base}_th_and")
    return b.node("Where", [cond, b.const(1, np.int8), b.const(-1, np.int8)], name=f"{base}_sign")[0]


# ----------------------------------------------------------------------------- layers

Core = Callable[[ExportContext, nn.Module, dict, str, str], str]


def weight_initializer(ctx: ExportContext, p: dict, base: str, transpose: bool = False) -> str:
    """int8 weight levels; 4-bit weights are stored as INT4 (opset >= 21) and Cast to int8."""
    levels = p["weight"].astype(np.int8)
    if transpose:
        levels = np.ascontiguousarray(levels.T)
    b = ctx.b
    if p["weight_bits"] == 4 and ctx.opset >= 21:
        w4 = b.initializer(f"{base}_w_int4", levels.astype(ml_dtypes.int4))
        return b.node("Cast", [w4], name=f"{base}_w_cast", to=TensorProto.INT8)[0]
    return b.initializer(f"{base}_w", levels)


def conv_integer_core(ctx: ExportContext, layer: nn.Module, p: dict, x: str, base: str) -> str:
    return ctx.b.node("ConvInteger", [x, weight_initializer(ctx, p, base)], name=base, **conv_attrs(layer))[0]


def matmul_integer_core(ctx: ExportContext, layer: nn.Module, p: dict, x: str, base: str) -> str:
    return ctx.b.node("MatMulInteger", [x, weight_initializer(ctx, p, base, transpose=True)], name=base)[0]


def integer_core(layer: nn.Module) -> Core:
    return conv_integer_core if isinstance(layer, QConv2d) else matmul_integer_core


def add_bias(ctx: ExportContext, acc: str, p: dict, rank: int, base: str) -> str:
    if p["bias"] is None:
        return acc
    bias = ctx.b.initializer(f"{base}_b", channel_shape(p["bias"].astype(np.int32), rank))
    return ctx.b.node("Add", [acc, bias], name=f"{base}_bias")[0]


def layer_input(ctx: ExportContext, node: fx.Node) -> tuple[nn.Module, dict, str, str]:
    """The layer, its integer parameters, its quantized input tensor and its name stem."""
    layer = ctx.module(node)
    base = base_name(node)
    x, _ = to_grid(ctx, ctx.arg(node), Grid.of(layer.in_q), base)
    return layer, layer.integer_params(), x, base


def layer_rank(layer: nn.Module) -> int:
    return 4 if isinstance(layer, QConv2d) else 2


def lower_layer(ctx: ExportContext, node: fx.Node, core: Core) -> IntValue:
    """Shared body of the conv / linear handlers: quantized input -> ``core`` (int32) -> + bias."""
    layer, p, x, base = layer_input(ctx, node)
    rank = layer_rank(layer)
    acc = add_bias(ctx, core(ctx, layer, p, x, base), p, rank, base)
    return IntValue(acc, np.asarray(p["bias_scale"], np.float32), rank, base)


# ----------------------------------------------------------------------------- structural handlers


def placeholder(ctx: ExportContext, node: fx.Node) -> FloatInput:
    return FloatInput(ctx.b.add_input("input", TensorProto.FLOAT, ["N", *ctx.input_shape]), 1 + len(ctx.input_shape))


def output(ctx: ExportContext, node: fx.Node) -> str:
    (src,) = node.args
    v = ctx.values[src.name]
    acc, rank = accumulator(ctx, v, "output")
    b = ctx.b
    scale = np.asarray(v.scale, np.float32)
    extra = {"axis": 1} if scale.ndim == 1 else {}
    b.node("DequantizeLinear", [acc, b.initializer("output_scale", scale)], ["logits"], name="output_dequant", **extra)
    b.add_output("logits", TensorProto.FLOAT, ["N", *ctx.shapes.get(src.name, (1, None))[1:]])
    return "logits"


def _int_value(ctx: ExportContext, node: fx.Node) -> IntValue:
    v = ctx.arg(node)
    if not isinstance(v, IntValue):
        raise UnsupportedError(f"{node.name}: operates on the float input before any quantizer")
    return v


def relu(ctx: ExportContext, node: fx.Node) -> IntValue:
    return _int_value(ctx, node).clamped(RELU)


def clamp(ctx: ExportContext, node: fx.Node) -> IntValue:
    """ReLU6 / hardtanh: folded into the consumer's integer clamp."""
    return _int_value(ctx, node).clamped(clamp_bounds(ctx.gm, node))


def maxpool(ctx: ExportContext, node: fx.Node) -> IntValue:
    attrs = maxpool_attrs(ctx.gm, node)
    v = _int_value(ctx, node)
    return v.but(post=v.post + (PostOp("MaxPool", tuple((k, tuple(a)) for k, a in attrs.items())),))


def flatten(ctx: ExportContext, node: fx.Node) -> IntValue:
    v = _int_value(ctx, node)
    return v.but(post=v.post + (PostOp("Flatten", (("axis", 1),)),))


def batchnorm(ctx: ExportContext, node: fx.Node) -> IntValue:
    return _int_value(ctx, node).but(bn=ctx.module(node))


def shared_grid_inputs(ctx: ExportContext, node: fx.Node, grid: Grid, base: str) -> tuple[list[str], int]:
    """Every input of ``node`` on ``grid``, as int32 tensors (exact: one grid, no rescaling)."""
    ins, rank = [], 0
    for i in range(len(node.args)):
        x, rank = to_grid(ctx, ctx.arg(node, i), grid, f"{base}_in{i}")
        ins.append(ctx.b.node("Cast", [x], name=f"{base}_in{i}_int32", to=TensorProto.INT32)[0])
    return ins, rank


def residual_add(ctx: ExportContext, node: fx.Node) -> IntValue:
    """QAdd: both inputs requantized to the shared grid, added exactly in int32."""
    grid = Grid.of(ctx.module(node).in_q)
    base = base_name(node)
    ins, rank = shared_grid_inputs(ctx, node, grid, base)
    (acc,) = ctx.b.node("Add", ins, name=base)
    return IntValue(acc, np.asarray(grid.scale, np.float32), rank, base)


def concat(ctx: ExportContext, node: fx.Node) -> IntValue:
    """QConcat: every input requantized to the shared grid, concatenated in int32."""
    m = ctx.module(node)
    grid, base = Grid.of(m.in_q), base_name(node)
    ins, rank = shared_grid_inputs(ctx, node, grid, base)
    (acc,) = ctx.b.node("Concat", ins, name=base, axis=m.dim)
    return IntValue(acc, np.asarray(grid.scale, np.float32), rank, base)


def avgpool(ctx: ExportContext, node: fx.Node) -> IntValue:
    """QAvgPool2d: the input on its grid, then the exact int32 sum of each window (ReduceSum for
    global pooling, else a ConvInteger with an all-ones depthwise kernel, zero padding included);
    the division by the window size joins the consumer's multiplier (scale ``s / window``)."""
    m = ctx.module(node)
    grid, base = Grid.of(m.in_q), base_name(node)
    x, rank = to_grid(ctx, ctx.arg(node), grid, base)
    b = ctx.b
    if m.is_global:
        h, w = ctx.shapes[node.args[0].name][2:]
        (x32,) = b.node("Cast", [x], name=f"{base}_int32", to=TensorProto.INT32)
        (acc,) = b.node("ReduceSum", [x32, b.const([2, 3], np.int64)], name=base, keepdims=int(m.keepdim))
        count, rank = h * w, (4 if m.keepdim else 2)
    else:
        (kh, kw), (sh, sw), (ph, pw) = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
        c = ctx.shapes[node.args[0].name][1]
        ones = b.initializer(f"{base}_ones", np.ones((c, 1, kh, kw), np.int8))
        (acc,) = b.node("ConvInteger", [x, ones], name=base, kernel_shape=[kh, kw], strides=[sh, sw],
                        pads=[ph, pw, ph, pw], group=c)
        count = kh * kw
    return IntValue(acc, (np.float32(grid.scale) / np.float32(count)).astype(np.float32), rank, base)


def global_avgpool(ctx: ExportContext, node: fx.Node) -> IntValue:
    """Average pooling to 1x1 as an int32 sum; the division joins the consumer's multiplier."""
    base = base_name(node)
    v = _int_value(ctx, node)
    acc, rank = accumulator(ctx, v, base)
    h, w = ctx.shapes[node.args[0].name][2:]
    (s,) = ctx.b.node("ReduceSum", [acc, ctx.b.const([2, 3], np.int64)], name=base, keepdims=1)
    scale = (np.asarray(v.scale, np.float32) / np.float32(h * w)).astype(np.float32)
    return IntValue(s, scale, rank, base)


# ----------------------------------------------------------------------------- checks (pre-export scan)


def _is_layer(gm: fx.GraphModule, n: Any) -> bool:
    return isinstance(n, fx.Node) and n.op == "call_module" and isinstance(gm.get_submodule(n.target), QUANT_LAYERS)


def _transparent(gm: fx.GraphModule, n: fx.Node) -> bool:
    return node_key(gm, n) in _TRANSPARENT


def terminal_users(gm: fx.GraphModule, node: fx.Node) -> list[tuple[fx.Node, bool]]:
    """Consumers of ``node`` reached through relu / max pool / flatten, with 'saw a relu'."""
    out, frontier = [], [(u, False) for u in node.users]
    while frontier:
        u, saw_relu = frontier.pop(0)
        if _transparent(gm, u):
            frontier.extend((w, saw_relu or node_key(gm, u) in (*_RELU, *_CLAMP)) for w in u.users)
        else:
            out.append((u, saw_relu))
    return out


def check_layer(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    layer = gm.get_submodule(node.target)
    problems = []
    if not layer.quantized:
        problems.append(f"{node.target}: float layer (integer forms need quantized weights and inputs)")
    if isinstance(layer, QConv2d) and isinstance(layer.padding, str):
        problems.append(f"{node.target}: string padding {layer.padding!r} is not supported")
    return problems


def check_batchnorm(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    src = node.args[0]
    problems = []
    if not _is_layer(gm, src):
        problems.append(f"{node.target}: BatchNorm must directly follow a quantized conv/linear layer")
    for user, saw_relu in terminal_users(gm, node):
        binary = _is_layer(gm, user) and gm.get_submodule(user.target).in_q.bits == "binary"
        if not binary or saw_relu:
            problems.append(f"{node.target}: BatchNorm must feed binary activations (sign) without a ReLU; "
                            f"it feeds {user.target if user.op == 'call_module' else user.name}")
    return problems


def check_output(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    n = node.args[0]
    while isinstance(n, fx.Node) and _transparent(gm, n):
        if node_key(gm, n) in _MAXPOOL:
            return [f"{n.name}: max pooling right before the output is not supported (no int32 MaxPool)"]
        if node_key(gm, n) in _CLAMP and clamp_bounds(gm, n) != RELU:
            return [f"{n.name}: a clamp other than ReLU right before the output is not supported"]
        n = n.args[0]
    if isinstance(n, fx.Node) and n.op == "call_module" and isinstance(gm.get_submodule(n.target), _BN):
        return [f"{n.target}: a BatchNorm output must feed a binary activation, not the model output"]
    return []


def check_qadd(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    return [] if gm.get_submodule(node.target).in_q.enabled else [f"{node.target}: float residual add"]


def check_shared_grid(gm: fx.GraphModule, node: fx.Node) -> list[str]:
    m = gm.get_submodule(node.target)
    kind = type(m).__name__
    return [] if m.in_q.enabled and m.in_q.bits != "binary" else [f"{node.target}: {kind} needs an 8/4/2-bit input grid"]


# ----------------------------------------------------------------------------- registration


def register_structural(fmt: str, opsets: tuple[int, int]) -> None:
    """Handlers every integer form shares (all but the conv / linear layers)."""
    table = [
        ("placeholder", placeholder, None), ("output", output, check_output),
        (_RELU, relu, None), (_CLAMP, clamp, check_clamp), (_MAXPOOL, maxpool, check_maxpool),
        (_FLATTEN, flatten, check_flatten), (_BN, batchnorm, check_batchnorm), ((QAdd,), residual_add, check_qadd),
        (_AVGPOOL, global_avgpool, check_avgpool), ((QConcat,), concat, check_shared_grid),
        ((QAvgPool2d,), avgpool, check_shared_grid),
    ]
    for targets, fn, check in table:
        if check is not None:
            fn.check = check
        register_handler(fmt, *(targets if isinstance(targets, tuple) else (targets,)), opsets=opsets)(fn)


__all__ = ["FloatInput", "Grid", "IntValue", "LazyProducer", "PostOp", "accumulator", "accumulator_core", "add_bias",
           "check_layer", "emit_sign_threshold", "integer_core", "layer_input", "layer_rank", "lower_layer",
           "register_structural", "terminal_users", "to_grid", "weight_initializer"]
