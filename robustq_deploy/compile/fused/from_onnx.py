"""Build a :class:`~.network.Network` of fused kernels from a prepared integer ONNX graph.

The compile stage's prepare step (:func:`robustq_deploy.compile.prepare`: requantization chains
fused into ``Requantize``, QDQ layers into ``FusedConv`` / ``FusedGemm`` / ``FusedMatMul``)
leaves the project's exports in a regular form::

    QuantizeLinear -> ConvInteger -> Add bias -> Requantize -> [MaxPool] -> ... -> Flatten
                   -> MatMulInteger -> Add bias -> DequantizeLinear            (integer export)
    QuantizeLinear -> FusedConv -> [MaxPool] -> ... -> Flatten -> FusedGemm     (QDQ export)

:func:`from_onnx` walks such a graph and feeds the layers to the same builder the PyTorch twin
uses (:mod:`.builder`: weight packing, fused epilogues, NHWC storage), with the file's own
fixed-point multipliers (``FusedGrid.fixed``) so the result is bit-exact with the numpy integer
reference of the file. A max pool after a requantization is fused before it (requantization
is monotone per channel, so the two commute bit for bit).

Residual adds (``Add(Cast(Requantize(conv)), Cast(Requantize(other)))``) fuse into the
convolution's epilogue; ``Relu -> ReduceSum(H, W) -> Requantize`` becomes the global average pool
kernel. ``Where(acc >= thr, 1, -1)`` is a binary activation (the layer's threshold epilogue,
bit-packed output) read by the ``ai.robustq`` XNOR-popcount layers. Anything else (float
residual adds of a QDQ ResNet, non-zero weight zero points, float requantization, ternary
weights, ...) raises one :class:`~robustq_deploy.errors.UnsupportedError` listing the nodes; the compile stage then keeps
its per-op path. To support another pattern, add a handler to :data:`HANDLERS` that maps the
node onto the builder's values (``builder.Value``) and grids (``builder.FusedGrid``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ...errors import UnsupportedError
from ...kernels.registry import KernelContext
from ...fixed_point import multiplier_for
from ...registry import Registry, registry_of
from .builder import FusedGrid, LayerOp, NetworkBuilder, Value, finish
from .network import Network

FUSED_DOMAIN = "ai.robustq.compile"
PACKED_DOMAIN = "ai.robustq"
BINARY = FusedGrid(0.0, 0, -1, 1, binary=True)


class _Walk:
    """State of one graph walk: builder values and the grid of each quantized tensor."""

    def __init__(self, model: onnx.ModelProto, ctx: KernelContext):
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1 or len(g.output) != 1:
            raise UnsupportedError("fused network: the graph must have one input and one output")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or None in dims[1:] or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise UnsupportedError("fused network: the input must be float [N, C, H, W] with static C, H, W")
        self.b = NetworkBuilder(tuple(dims[1:]), ctx)
        self.vals: dict[str, Value] = {inputs[0].name: Value("input", shape=tuple(dims[1:]))}
        self.grids: dict[str, FusedGrid] = {}
        self.casts: dict[str, FusedGrid] = {}  # int32 casts of quantized tensors (residual add operands)
        self.thresholds: dict[str, np.ndarray] = {}  # GreaterOrEqual(acc, thr) outputs: int64 [O]
        self.shape_of: dict[str, tuple] = {}  # a layer's current (pooled) output shape
        self.logits: str | None = None
        self.output = g.output[0].name

    # ----------------------------------------------------------------------------- helpers

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def quantized(self, node: onnx.NodeProto, i: int = 0) -> tuple[Value, FusedGrid]:
        x = node.input[i]
        if x not in self.grids:
            raise UnsupportedError(f"{node.name or node.op_type}: input {x} is not a quantized tensor")
        v = self.vals[x]
        lay = v.layer if v.kind == "acc" else (v.src.layer if v.kind == "flat" and v.src.kind == "acc" else None)
        if lay is not None and (v.src.shape if v.kind == "flat" else v.shape) != self.shape_of[lay.name]:
            raise UnsupportedError(f"{node.name}: reads {lay.name} at another pooling level than its other consumers")
        return v, self.grids[x]

    def add_layer(self, node: onnx.NodeProto, op: LayerOp, v: Value, grid: FusedGrid) -> Value:
        out = self.b.layer(node.name or node.output[0], op, grid, v)
        self.shape_of[out.layer.name] = out.shape
        return out

    @staticmethod
    def zero(a: np.ndarray | None) -> bool:
        return a is None or not np.any(a)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _grid_range(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _conv_geometry(node: onnx.NodeProto, weight: np.ndarray) -> tuple[int, int]:
    a = _attrs(node)
    pads, strides = list(a.get("pads", [0, 0, 0, 0])), list(a.get("strides", [1, 1]))
    if (a.get("group", 1) != 1 or list(a.get("dilations", [1, 1])) != [1, 1] or len(set(pads)) != 1
            or len(set(strides)) != 1 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or weight.ndim != 4):
        raise UnsupportedError(f"{node.name}: only square stride/padding, no groups, dilation or auto_pad")
    return int(strides[0]), int(pads[0])


# ------------------------------------------------------------------------------ handlers


def _quantize_linear(w: _Walk, node):
    v = w.vals[node.input[0]]
    scale, zp = w.const(node.input[1]), w.const(node.input[2] if len(node.input) > 2 else "")
    if v.kind != "input" or scale is None or scale.size != 1 or _attrs(node).get("saturate", 1) != 1:
        raise UnsupportedError(f"{node.name}: only a per-tensor QuantizeLinear of the graph input")
    dtype = zp.dtype if zp is not None else np.uint8
    if dtype not in (np.uint8, np.int8):
        raise UnsupportedError(f"{node.name}: quantizes to {dtype}")
    qmin, qmax = _grid_range(dtype)
    zpv = int(zp.reshape(())) if zp is not None else 0
    w.vals[node.output[0]] = v
    w.grids[node.output[0]] = FusedGrid(float(np.float32(scale.reshape(()))), zpv, qmin, qmax)


def _integer_product(w: _Walk, node):
    """ConvInteger / MatMulInteger with a constant int8 weight and zero weight zero point."""
    v, grid = w.quantized(node)
    wt = w.const(node.input[1])
    xz = w.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.int64)
    wz = w.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if wt is None or wt.dtype != np.int8 or xz is None or int(xz.reshape(-1)[0]) != grid.zero_point or not w.zero(wz):
        raise UnsupportedError(f"{node.name}: needs a constant int8 weight, zero weight zero points and the input "
                               "grid's zero point")
    nan = np.full(wt.shape[0] if node.op_type == "ConvInteger" else wt.shape[1], np.nan, np.float32)
    if node.op_type == "ConvInteger":
        s, p = _conv_geometry(node, wt)
        op = LayerOp("conv", wt.astype(np.int64), None, nan, s, p)
    else:
        op = LayerOp("dense", wt.T.astype(np.int64), None, nan)
    w.vals[node.output[0]] = w.add_layer(node, op, v, grid)


def _fused(w: _Walk, node):
    """QDQ layers (``FusedConv`` / ``FusedGemm`` / ``FusedMatMul`` with fixed-point requant)."""
    v, grid = w.quantized(node)
    ins = list(node.input) + [""] * (9 - len(node.input))
    xs, xz, wt, ws, wz, ys, yz, bias = (w.const(ins[i]) for i in (1, 2, 3, 4, 5, 6, 7, 8))
    a = _attrs(node)
    x_zp = 0 if xz is None else int(xz.reshape(-1)[0])
    if (wt is None or wt.dtype != np.int8 or ws is None or not w.zero(wz) or xs is None or x_zp != grid.zero_point
            or (ys is None) != (ins[6] == "") or a.get("requant", b"") not in (b"fixed-point", "fixed-point")):
        raise UnsupportedError(f"{node.name}: needs constant int8 weights, zero weight zero points, the input "
                               "grid's zero point and fixed-point requantization")
    if node.op_type == "FusedConv":
        s, p = _conv_geometry(node, wt)
        weight = wt.astype(np.int64)
    else:
        weight = (wt if (node.op_type == "FusedGemm" and a.get("transB", 0)) else wt.T).astype(np.int64)
        if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
            raise UnsupportedError(f"{node.name}: Gemm with alpha/beta/transA")
    oc = weight.shape[0]
    acc_scale = np.broadcast_to((np.asarray(xs, np.float32).reshape(()) * np.asarray(ws, np.float32).reshape(-1))
                                .astype(np.float32), (oc,)).copy()
    b = None if bias is None else np.broadcast_to(bias.astype(np.int64).reshape(-1), (oc,)).copy()
    if node.op_type == "FusedConv":
        op = LayerOp("conv", weight, b, acc_scale, s, p)
    else:
        op = LayerOp("dense", weight, b, acc_scale)
    out = w.add_layer(node, op, v, grid)
    w.vals[node.output[0]] = out
    if ys is None:  # float output: the logits
        w.logits = node.output[0]
        return
    qmin, qmax = _grid_range(yz.dtype if yz is not None else np.uint8)
    zp = 0 if yz is None else int(yz.reshape(()))
    m0, n = multiplier_for(acc_scale, np.asarray(ys, np.float32).reshape(()))
    w.grids[node.output[0]] = FusedGrid(float(np.float32(ys.reshape(()))), zp, int(a.get("lo", qmin)),
                                   int(a.get("hi", qmax)), fixed=(tuple(int(x) for x in m0), tuple(int(x) for x in n)))


def _add(w: _Walk, node):
    if all(i in w.casts for i in node.input):  # residual add of two requantized operands
        a, b = ((w.vals[i], w.casts[i]) for i in node.input)
        w.vals[node.output[0]] = w.b.fuse_residual(node.name, a, b)
        return
    v = w.vals.get(node.input[0])
    bias = w.const(node.input[1])
    if v is None or v.kind != "acc" or bias is None or node.input[0] in w.grids:
        raise UnsupportedError(f"{node.name}: only a constant bias added to a layer's accumulator")
    lay = v.layer
    oc = lay.op.weight.shape[0]
    if lay.op.bias is not None or lay.ops or lay.outputs or bias.size != oc or bias.dtype != np.int32:
        raise UnsupportedError(f"{node.name}: bias must be one int32 per output channel, added once")
    lay.op = replace(lay.op, bias=bias.astype(np.int64).reshape(-1))
    w.vals[node.output[0]] = v


def _requantize(w: _Walk, node):
    v = w.vals.get(node.input[0])
    if v is None or v.kind not in ("acc", "gap") or node.input[0] in w.grids:
        raise UnsupportedError(f"{node.name}: Requantize of something other than an accumulator or pooled sum")
    a = _attrs(node)
    oc = v.shape[0]
    if v.kind == "acc" and any(op[0] == "relu" for op in v.layer.ops) and int(a["qmin"]) < 0:
        raise UnsupportedError(f"{node.name}: reads a residual sum before its ReLU")
    m0 = np.broadcast_to(numpy_helper.to_array(a["m0"]).reshape(-1), (oc,))
    n = np.broadcast_to(numpy_helper.to_array(a["n"]).reshape(-1), (oc,))
    if a["to"] not in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8):  # the kernels store 8-bit activations
        raise UnsupportedError(f"{node.name}: requantizes to ONNX type {a['to']}")
    w.vals[node.output[0]] = v
    # scale 0.0: the grid's scale is unknown here and unused, the multipliers are explicit
    w.grids[node.output[0]] = FusedGrid(0.0, 0, int(a["qmin"]), int(a["qmax"]),
                                   fixed=(tuple(int(x) for x in m0), tuple(int(x) for x in n)))


def _max_pool(w: _Walk, node):
    v, grid = w.quantized(node)
    a = _attrs(node)
    k, st = list(a.get("kernel_shape", [])), list(a.get("strides", a.get("kernel_shape", [])))
    if (v.kind != "acc" or len(set(k)) != 1 or k != st or any(a.get("pads", [0])) or a.get("ceil_mode", 0)
            or list(a.get("dilations", [1, 1])) != [1, 1] or len(node.output) != 1):
        raise UnsupportedError(f"{node.name}: max pooling must follow a layer, stride == kernel, no padding")
    lay = v.layer
    if lay.outputs:
        raise UnsupportedError(f"{node.name}: {lay.name} is also read before this max pool")
    lay.ops.append(("pool", k[0]))
    c, h, wd = v.shape
    pooled = Value("acc", lay, (c, h // k[0], wd // k[0]))
    w.shape_of[lay.name] = pooled.shape
    w.vals[node.output[0]] = pooled
    w.grids[node.output[0]] = grid


def _flatten(w: _Walk, node):
    v, grid = w.quantized(node)
    if _attrs(node).get("axis", 1) != 1 or v.kind not in ("acc", "gap"):
        raise UnsupportedError(f"{node.name}: only Flatten(axis=1) of a layer's output")
    w.vals[node.output[0]] = Value("flat", None, (int(np.prod(v.shape)),), src=v)
    w.grids[node.output[0]] = grid


def _cast(w: _Walk, node):
    v, grid = w.quantized(node)
    if _attrs(node).get("to") != onnx.TensorProto.INT32 or v.kind != "acc":
        raise UnsupportedError(f"{node.name}: only a cast of a requantized layer output to int32")
    w.vals[node.output[0]] = v
    w.casts[node.output[0]] = grid


def _relu(w: _Walk, node):
    v = w.vals.get(node.input[0])
    if v is None or v.kind != "acc" or v.layer.residual is None or node.input[0] in w.grids or v.layer.outputs:
        raise UnsupportedError(f"{node.name}: only a ReLU of a residual sum read by nothing else")
    w.vals[node.output[0]] = Value("relu", v.layer, v.shape, src=v)


def _reduce_sum(w: _Walk, node):
    """Global sum pooling of a ReLU'd residual sum (the integer export's average pooling: the
    1 / (H * W) is folded into the next Requantize)."""
    v = w.vals.get(node.input[0])
    axes = w.const(node.input[1]) if len(node.input) > 1 else None
    if (v is None or v.kind != "relu" or axes is None or sorted(axes.reshape(-1).tolist()) != [2, 3]
            or _attrs(node).get("keepdims", 1) != 1):
        raise UnsupportedError(f"{node.name}: only ReduceSum over H, W of a ReLU'd residual sum")
    v.layer.ops.append(("relu",))
    w.vals[node.output[0]] = Value("gap", None, (v.shape[0], 1, 1), src=v.src)


def _greater_or_equal(w: _Walk, node):
    v = w.vals.get(node.input[0])
    thr = w.const(node.input[1])
    if v is None or v.kind != "acc" or node.input[0] in w.grids or thr is None or thr.dtype.kind != "i":
        raise UnsupportedError(f"{node.name}: only a constant integer threshold of a layer's accumulator")
    oc = v.shape[0]
    if thr.size not in (1, oc) or (thr.ndim > 1 and thr.shape[1] != thr.size):
        raise UnsupportedError(f"{node.name}: thresholds must be per tensor or per channel (axis 1)")
    w.vals[node.output[0]] = v
    w.thresholds[node.output[0]] = np.broadcast_to(thr.astype(np.int64).reshape(-1), (oc,)).copy()


def _where(w: _Walk, node):
    """``Where(acc >= thr, 1, -1)``: the binary activation, fused as the layer's threshold."""
    cond, one, minus = node.input[0], w.const(node.input[1]), w.const(node.input[2])
    if cond not in w.thresholds or one is None or minus is None or one.size != 1 or minus.size != 1 \
            or (int(one.reshape(())), int(minus.reshape(()))) != (1, -1):
        raise UnsupportedError(f"{node.name}: only Where(acc >= thr, 1, -1) (a binary activation)")
    v = w.vals[cond]
    if v.layer.ops or v.layer.outputs:
        raise UnsupportedError(f"{node.name}: {v.layer.name} is read elsewhere too")
    v.layer.ops.append(("thr", w.thresholds[cond]))
    w.vals[node.output[0]] = v
    w.grids[node.output[0]] = BINARY


def _packed_binary(w: _Walk, node):
    """``ai.robustq`` BinaryConv2d / BinaryGemm with packed {-1, +1} weights."""
    from ...export.robustq_ops import unpack_weights

    v, grid = w.quantized(node)
    wp = w.const(node.input[1])
    a = _attrs(node)
    if wp is None or wp.dtype != np.uint8 or wp.ndim != 2:
        raise UnsupportedError(f"{node.name}: needs constant packed binary weights")
    if node.op_type == "BinaryConv2d":
        kh, kw = a["kernel_shape"]
        if v.kind != "input" and v.kind != "acc":
            raise UnsupportedError(f"{node.name}: convolution of a {v.kind} value")
        c = v.shape[0]
        weight = unpack_weights("binary", wp, c * kh * kw).reshape(wp.shape[0], c, kh, kw).astype(np.int64)
        s, p = _conv_geometry(node, weight)
        op = LayerOp("conv", weight, None, np.full(wp.shape[0], np.nan, np.float32), s, p)
    else:
        weight = unpack_weights("binary", wp, int(v.shape[0])).astype(np.int64)
        op = LayerOp("dense", weight, None, np.full(wp.shape[0], np.nan, np.float32))
    w.vals[node.output[0]] = w.add_layer(node, op, v, grid)


def _dequantize(w: _Walk, node):
    v = w.vals.get(node.input[0])
    scale = w.const(node.input[1])
    zp = w.const(node.input[2]) if len(node.input) > 2 else None
    if v is None or v.kind != "acc" or node.input[0] in w.grids or scale is None or not w.zero(zp):
        raise UnsupportedError(f"{node.name}: only DequantizeLinear of the last layer's accumulator")
    oc = v.layer.op.weight.shape[0]
    v.layer.op = replace(v.layer.op, acc_scale=np.broadcast_to(scale.astype(np.float32).reshape(-1), (oc,)).copy())
    w.vals[node.output[0]] = v
    w.logits = node.output[0]


def _identity(w: _Walk, node):
    w.vals[node.output[0]] = w.vals[node.input[0]]
    if node.input[0] in w.grids:
        w.grids[node.output[0]] = w.grids[node.input[0]]
    if w.logits == node.input[0]:
        w.logits = node.output[0]


HANDLERS: Registry[Callable[[_Walk, onnx.NodeProto], None]] = registry_of({
    ("", "QuantizeLinear"): _quantize_linear,
    ("", "ConvInteger"): _integer_product,
    ("", "MatMulInteger"): _integer_product,
    ("", "Add"): _add,
    ("", "MaxPool"): _max_pool,
    ("", "Flatten"): _flatten,
    ("", "DequantizeLinear"): _dequantize,
    ("", "Identity"): _identity,
    ("", "Cast"): _cast,
    ("", "Relu"): _relu,
    ("", "ReduceSum"): _reduce_sum,
    ("", "GreaterOrEqual"): _greater_or_equal,
    ("", "Where"): _where,
    (PACKED_DOMAIN, "BinaryConv2d"): _packed_binary,
    (PACKED_DOMAIN, "BinaryGemm"): _packed_binary,
    (FUSED_DOMAIN, "Requantize"): _requantize,
    (FUSED_DOMAIN, "FusedConv"): _fused,
    (FUSED_DOMAIN, "FusedGemm"): _fused,
    (FUSED_DOMAIN, "FusedMatMul"): _fused,
}, "fused network pattern")


def from_onnx(model: onnx.ModelProto, target, name: str = "onnx") -> Network:
    """The kernel network of a prepared integer ONNX model for ``target`` (a
    ``tvm.target.Target``); :class:`UnsupportedError` when any part of the graph does not match."""
    w = _Walk(model, KernelContext.for_target(target))
    problems = []
    for node in model.graph.node:
        key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        handler = HANDLERS[key] if key in HANDLERS else None
        if handler is None:
            problems.append(f"{node.name or node.output[0]}: {node.op_type} has no fused kernel pattern")
            continue
        if any(i and i not in w.vals and i not in w.consts for i in node.input):
            problems.append(f"{node.name or node.output[0]}: input from an unmatched node")
            continue
        try:
            handler(w, node)
        except UnsupportedError as exc:
            problems.append(str(exc))
    if problems:
        raise UnsupportedError("fused network does not cover this graph: " + "; ".join(problems[:5])
                               + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
    if w.logits != w.output:
        raise UnsupportedError("fused network: the graph output must be the last layer's dequantized accumulator")
    return finish(w.b, w.vals[w.output], name)


__all__ = ["HANDLERS", "from_onnx"]
