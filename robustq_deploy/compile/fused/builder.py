"""Assemble a :class:`~.network.Network` of fused kernels from integer layers.

A front end (:mod:`.from_onnx` for integer ONNX graphs, :mod:`.from_twin` for a quantized
PyTorch twin) walks its model and hands every quantized layer to :class:`NetworkBuilder`; every
layer becomes one fused kernel: its accumulator collects the ReLU, max pooling, BatchNorm and residual
add that follow it, and each *consumer* of its value adds one requantized output to its
epilogue (a consumer's input quantizer defines the grid, ``M = s_acc / s_in``, per
``robustq_deploy/fixed_point.py``). A BatchNorm followed by a binary input quantizer
becomes a threshold (``acc >= thr``; channels with a negative slope get negated weights), the
final layer's accumulator is dequantized to logits, a global average pool sums in int32 and
folds ``1/(H*W)`` into its requantization.

It supports the layer patterns of the project's architectures (``digits-cnn``, ``mnist-cnn``,
``resnet20``, ``mnist-bnn``) and refuses anything else with one
:class:`~robustq_deploy.errors.UnsupportedError` naming it. The builder works on plain arrays
(:class:`LayerOp`, :class:`FusedGrid`); for integer ONNX graphs the multipliers come from the
file (``FusedGrid.fixed``) instead of scales.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import UnsupportedError
from ...kernels import binary as B
from ...kernels import edges
from ...kernels import epilogue as E
from ...kernels import int8_conv2d as C
from ...kernels import int8_dense as D
from ...kernels import layout as L
from ...kernels.registry import KernelContext
from ...fixed_point import multiplier_for, quantize_multiplier
from .network import Network, Node, TensorInfo

ROWS_MAX_CHANNELS = 3  # first convs with at most this many input channels read the "rows" layout


@dataclass(frozen=True)
class FusedGrid:
    """An input quantizer's grid: per-tensor scale, zero point, range; or binary."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    binary: bool = False
    # explicit fixed-point (m0, n) per output channel from the producer's accumulator to this
    # grid, as an ONNX file states them (None: computed from the scales by multiplier_for)
    fixed: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def signed(self) -> bool:
        return self.qmin < 0

    @classmethod
    def of(cls, qp: dict) -> "FusedGrid":
        return cls(float(np.float32(qp["scale"])), int(qp["zero_point"]), int(qp["qmin"]), int(qp["qmax"]),
                   qp["bits"] == "binary")


@dataclass(frozen=True, eq=False)
class LayerOp:
    """The integer content of a quantized conv / linear: what a kernel node is packed from."""

    kind: str  # "conv" or "dense"
    weight: np.ndarray  # int64, [O, I, kh, kw] or [O, I]
    bias: np.ndarray | None  # int64 [O] (accumulator levels)
    acc_scale: np.ndarray  # float32 [O]: real scale of one accumulator level
    stride: int = 1
    pad: int = 0

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:]) if self.kind == "conv" else (1, 1)


@dataclass
class Layer:
    """A quantized conv/linear on its way to becoming a kernel node."""

    name: str
    op: LayerOp
    input: str  # stored tensor it reads
    in_grid: FusedGrid
    in_shape: tuple[int, int, int] | tuple[int]  # logical C, H, W (or features)
    flat_from: tuple[int, int, int] | None = None  # logical C, H, W of a flattened spatial input
    # ("relu",), ("pool", k), ("bn", module), ("thr", int64 [O]: an explicit acc >= thr binary
    # activation, as ONNX files state it) in order
    ops: list = field(default_factory=list)
    # (stored operand, add grid of this layer's accumulator, grid the operand is stored on) of a
    # residual add fused into this layer; the two grids are one in a twin (not in ONNX files)
    residual: tuple[str, FusedGrid, FusedGrid] | None = None
    outputs: list = field(default_factory=list)  # (FusedGrid, relu) per consumer request
    rows: bool = False  # reads the float input quantized into the "rows" layout
    logits: bool = False


@dataclass
class Value:
    """What an fx node evaluates to while converting."""

    kind: str  # "input", "acc" (a Layer's accumulator or residual sum), "gap", "flat"
    layer: Layer | None = None
    shape: tuple = ()  # logical C, H, W (or features)
    src: "Value | None" = None  # for "gap" and "flat"


class NetworkBuilder:
    """Layers, stored tensors and extra nodes of a network under construction (a front end adds
    layers with :meth:`layer` and :meth:`fuse_residual`, then :func:`finish` makes the nodes)."""

    def __init__(self, input_shape: tuple[int, int, int], ctx: KernelContext):
        self.input_shape = tuple(input_shape)
        self.ctx = ctx
        self.low = ctx.lowering
        self.layers: list[Layer] = []
        self.extra_nodes: list[Node] = []
        self.tensors: dict[str, TensorInfo] = {}
        self.input_requests: list[tuple[FusedGrid, tuple | None]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}  # stored per-image shape of each tensor
        self.problems: list[str] = []

    # ------------------------------------------------------------ requests for stored tensors

    def storage(self, grid: FusedGrid) -> L.Storage:
        return L.Storage("uint32") if grid.binary else L.storage_for(grid.signed, self.low.act_dtype)

    def request(self, v: Value, grid: FusedGrid, rows: tuple[int, int] | None = None) -> str:
        """Name of a stored tensor holding value ``v`` on ``grid`` (creating the producer
        output); records the tensor's per-image stored shape in ``self.shapes``. ``rows`` asks
        for the float input in the "rows" layout ``(pad, row_len)``."""
        if v.kind == "input":
            key = (grid, rows)
            if key not in self.input_requests:
                self.input_requests.append(key)
            name = f"input.q{self.input_requests.index(key)}"
            c, h, w = v.shape
            self.shapes[name] = (h, w, L.round_up(c, 4)) if rows is None else (h + 2 * rows[0], rows[1])
            return name
        if v.kind == "acc":
            relu = any(op[0] == "relu" for op in v.layer.ops)
            req = (grid, relu)
            if req not in v.layer.outputs:
                v.layer.outputs.append(req)
            name = f"{v.layer.name}.out{v.layer.outputs.index(req)}"
            ch = B.words(v.shape[0]) if grid.binary else L.round_up(v.shape[0], self.low.lanes)
            self.shapes[name] = (*v.shape[1:], ch)
            return name
        if v.kind == "gap":
            return self.gap(v, grid)
        raise UnsupportedError(f"cannot requantize a {v.kind} value")

    def gap(self, v: Value, grid: FusedGrid) -> str:
        src = v.src
        if src.kind != "acc" or src.layer.residual is None or not any(op[0] == "relu" for op in src.layer.ops):
            raise UnsupportedError("global average pooling is supported after a ReLU of a residual sum only")
        add_grid = src.layer.residual[1]
        c, h, w = src.shape
        # relu(a + b) of two -127..127 levels fits 0..254; explicit multipliers (ONNX) read the
        # sum itself (identity multiplier) and state the pooled sum's multiplier
        identity = None if grid.fixed is None else tuple(tuple(int(x) for x in a) for a in quantize_multiplier(np.ones(c)))
        raw = FusedGrid(add_grid.scale, 0, 0, 255, fixed=identity)
        name_in = self.request(src, raw)
        cs = L.round_up(c, self.low.lanes)
        st = self.storage(grid)
        if grid.fixed is not None:
            m0, sh = (np.asarray(a, np.int64) for a in grid.fixed)
        else:
            m0, sh = quantize_multiplier(np.float64(add_grid.scale) / (h * w * np.float64(np.float32(grid.scale))))
        spec = edges.GlobalAvgPool(h, w, cs, self.storage(raw),
                                   E.Requant((E.QuantOut(grid.zero_point, grid.qmin, grid.qmax, st),)))
        params = {"m0_0": np.full(c, m0), "shift_0": np.full(c, sh)}
        name = f"gap{len(self.extra_nodes)}"
        out = f"{name}.out0"
        self.shapes[out] = (cs,)
        self.tensors[out] = TensorInfo((cs,), st.dtype)
        self.extra_nodes.append(Node(
            name, "avgpool", spec, edges.pack_avgpool(spec, params), [name_in], [out],
            lambda xs, spec=spec, params=params: edges.avgpool_reference(spec, xs[0], params)))
        return out

    # ------------------------------------------------------------------------- graph walk

    def layer(self, name: str, op: LayerOp, grid: FusedGrid, v: Value) -> Value:
        """A conv / dense layer ``op`` reading value ``v`` through the input grid ``grid``."""
        if op.kind == "conv":
            if v.kind not in ("input", "acc"):
                raise UnsupportedError(f"{name}: convolution of a {v.kind} value")
            c, h, w = v.shape
            kh, kw = op.kernel_size
            s, pad, oc = op.stride, op.pad, op.weight.shape[0]
            lay = Layer(name, op, "", grid, (c, h, w), rows=v.kind == "input" and c <= ROWS_MAX_CHANNELS)
            rows = None
            if lay.rows:
                probe = C.Conv2d(h, w, c, oc, (kh, kw), s, pad, L.Storage("uint8"), 0, E.Dequant(), rows=True)
                rows = (pad, probe.row_len)
            lay.input = self.request(v, grid, rows)
            oh, ow = (h + 2 * pad - kh) // s + 1, (w + 2 * pad - kw) // s + 1
            out_shape = (oc, oh, ow)
        else:
            flat_from = None
            src = v
            if v.kind == "flat":
                src = v.src
                flat_from = src.shape if len(src.shape) == 3 else None
            lay = Layer(name, op, "", grid, (op.weight.shape[1],), flat_from=flat_from)
            lay.input = self.request(src, grid)
            out_shape = (op.weight.shape[0],)
        self.layers.append(lay)
        return Value("acc", lay, out_shape)

    def modify(self, v: Value, op: tuple, where: str) -> Value:
        if v.kind != "acc":
            raise UnsupportedError(f"{where}: {op[0]} must follow a quantized layer or residual add")
        v.layer.ops.append(op)
        return v

    def fuse_residual(self, name: str, a: tuple[Value, FusedGrid], b: tuple[Value, FusedGrid]) -> Value:
        """The sum of two values, each on its grid, fused into the layer of the one that comes
        straight from a convolution (the other is stored on its grid and read by that kernel)."""
        def clean(v: Value) -> bool:
            return v.kind == "acc" and not (v.layer.ops or v.layer.residual or v.layer.outputs)

        if not clean(a[0]):
            a, b = b, a
        if not clean(a[0]) or a[0].layer.op.kind != "conv":
            raise UnsupportedError(f"{name}: a residual add needs one operand straight from a convolution")
        a[0].layer.residual = (self.request(b[0], b[1]), a[1], b[1])
        return Value("acc", a[0].layer, a[0].shape)

    # ---------------------------------------------------------------------------- nodes

    def input_nodes(self) -> list[Node]:
        nodes = []
        c, h, w = self.input_shape
        for i, (grid, rows) in enumerate(self.input_requests):
            st = self.storage(grid)
            spec = edges.QuantizeInput(c, h, w, grid.scale, grid.zero_point, grid.qmin, grid.qmax, st, rows)
            name = f"input.q{i}"
            assert self.shapes[name] == spec.out_shape
            self.tensors[name] = TensorInfo(spec.out_shape, st.dtype)
            nodes.append(Node(name, "quantize", spec, [], ["input"], [name],
                              lambda xs, spec=spec: [edges.quantize_reference(spec, xs[0])]))
        return nodes

    def layer_node(self, lay: Layer) -> Node:
        binary_in = lay.in_grid.binary
        w, bias, acc_scale = lay.op.weight, lay.op.bias, lay.op.acc_scale
        pool = 1
        bn = None
        for op in lay.ops:
            if op[0] == "pool":
                if bn is None and any(o[0] == "bn" for o in lay.ops):
                    raise UnsupportedError(f"{lay.name}: max pooling before BatchNorm is not supported")
                pool *= op[1]
            elif op[0] in ("bn", "thr"):
                bn = op
        epi, params, negate, out_tensors = self.epilogue(lay, acc_scale, bn)
        if negate is not None:
            w = np.where(negate.reshape((-1,) + (1,) * (w.ndim - 1)), -w, w)
            if bias is not None:
                bias = np.where(negate, -bias, bias)
        oc = w.shape[0]
        if lay.op.kind == "conv":
            return self._conv_node(lay, w, bias, epi, params, pool, binary_in, out_tensors)
        return self._dense_node(lay, w, bias, epi, params, binary_in, out_tensors, oc)

    def epilogue(self, lay: Layer, acc_scale: np.ndarray, bn: tuple | None):
        """Epilogue, its per-channel arrays, channels to negate, and output tensor names
        (``bn``: the layer's ``("bn", module)`` or ``("thr", thresholds)`` op, if any)."""
        oc = acc_scale.shape[0]
        names = [f"{lay.name}.out{i}" for i in range(len(lay.outputs))]
        if lay.logits:
            return E.Dequant(), {"scale": acc_scale.astype(np.float32)}, None, ["logits"]
        if not lay.outputs:
            raise UnsupportedError(f"{lay.name}: its value is never used")
        binary_outs = [g for g, _ in lay.outputs if g.binary]
        if binary_outs:
            if len(lay.outputs) != 1 or bn is None or lay.residual:
                raise UnsupportedError(f"{lay.name}: a binary output needs exactly one consumer after BatchNorm")
            thr, negate = (bn[1], None) if bn[0] == "thr" else bn_threshold(bn[1], acc_scale)
            return E.Threshold(), {"thr": thr}, negate, names
        if bn is not None:
            raise UnsupportedError(f"{lay.name}: BatchNorm is supported only before a binary activation")
        params: dict = {}
        outs = []
        if lay.residual:
            _, add_grid, _ = lay.residual
            if add_grid.fixed is not None:
                params["add_m0"], params["add_shift"] = (np.asarray(a, np.int64) for a in add_grid.fixed)
            else:
                params["add_m0"], params["add_shift"] = multiplier_for(acc_scale, add_grid.scale)
            base_scale = np.full(oc, add_grid.scale, np.float32)
        else:
            base_scale = acc_scale
        for i, (g, relu) in enumerate(lay.outputs):
            if g.fixed is not None:
                params[f"m0_{i}"], params[f"shift_{i}"] = (np.asarray(a, np.int64) for a in g.fixed)
            else:
                params[f"m0_{i}"], params[f"shift_{i}"] = multiplier_for(base_scale, g.scale)
            lo = max(g.qmin, g.zero_point) if relu else g.qmin
            outs.append(E.QuantOut(g.zero_point, lo, g.qmax, self.storage(g)))
        residual = self.storage(lay.residual[2]) if lay.residual else None
        add_range = (lay.residual[1].qmin, lay.residual[1].qmax) if lay.residual else (-127, 127)
        return E.Requant(tuple(outs), residual, add_range), params, None, names

    def _conv_node(self, lay, w, bias, epi, params, pool, binary_in, out_tensors) -> Node:
        c, h, wd = lay.in_shape
        kh, kw = lay.op.kernel_size
        s, pad = lay.op.stride, lay.op.pad
        inputs = [lay.input] + ([lay.residual[0]] if lay.residual else [])
        if binary_in:
            if pad:
                raise UnsupportedError(f"{lay.name}: binary convolutions take no zero padding")
            spec = B.BinaryConv2d(h, wd, c, w.shape[0], (kh, kw), s, epi, pool)
            consts = B.pack_conv(spec, self.ctx.bits.lanes, w.astype(np.int8), bias, params)
            ref = lambda xs: B.reference_conv(spec, xs[0], w, bias, params)  # noqa: E731
            oh, ow = spec.out_hw
            lanes = self.ctx.bits.lanes
        else:
            st_in = self.storage(lay.in_grid)
            zp = lay.in_grid.zero_point
            cs = c if lay.rows else self.shapes[lay.input][-1]
            spec = C.Conv2d(h, wd, cs, w.shape[0], (kh, kw), s, pad, st_in, zp + st_in.offset, epi, pool, rows=lay.rows)
            wk = w
            consts = C.pack(spec, self.low, wk.astype(np.int8), bias, params, zp)
            res_levels = bool(lay.residual)
            ref = lambda xs: C.reference(spec, xs[0], wk, bias, params, zp, xs[1] if res_levels else None)  # noqa: E731
            oh, ow = spec.out_hw
            lanes = self.low.lanes
        self._register_outputs(epi, out_tensors, w.shape[0], (oh, ow), lanes)
        return Node(lay.name, "binary_conv2d" if binary_in else "conv2d", spec, consts, inputs, out_tensors, ref)

    def _dense_node(self, lay, w, bias, epi, params, binary_in, out_tensors, oc) -> Node:
        flat = lay.flat_from
        src_shape = self.shapes[lay.input]
        if binary_in:
            stored_w = w
            in_words = 0
            if flat is not None:
                c, h, wd = flat
                cp = B.words(c) * B.WORD
                full = -np.ones((oc, h, wd, cp), np.int64)  # padded bits are 0 (-1) in both operands
                full[..., :c] = w.reshape(oc, c, h, wd).transpose(0, 2, 3, 1)
                stored_w = L.pack_bits(full.reshape(oc, -1), axis=-1)
                in_words = h * wd * B.words(c)
            spec = B.BinaryDense(w.shape[1], oc, epi, in_words)
            consts = B.pack_dense(spec, self.ctx.bits.lanes, stored_w if stored_w.dtype == np.uint32 else stored_w.astype(np.int8),
                                  bias, params)
            ref = lambda xs: B.reference_dense(spec, xs[0].reshape(xs[0].shape[0], -1), w, bias, params)  # noqa: E731
            lanes = self.ctx.bits.lanes
            kernel = "binary_dense"
        else:
            st_in = self.storage(lay.in_grid)
            zp = lay.in_grid.zero_point
            # the kernel reads the stored row as it is: a dense input's features are padded to
            # the producer's lane tile (fc 100 -> 112 on zmm), so the weight gets zero columns
            # there (a flat features vector is a 1x1 image)
            c, h, wd = flat if flat is not None else (w.shape[1], 1, 1)
            stored_w = L.dense_weight_from_nchw(w, c, h, wd, src_shape[-1])
            spec = D.Dense(L.round_up(stored_w.shape[1], 4), oc, st_in, epi)
            consts = D.pack(spec, self.low, stored_w.astype(np.int8), bias, params, zp)
            ref = lambda xs: D.reference(spec, xs[0].reshape(xs[0].shape[0], -1), w, bias, params, zp)  # noqa: E731
            lanes = self.low.lanes
            kernel = "dense"
        stored = spec.stored_words if binary_in else spec.in_features
        if stored != int(np.prod(src_shape)):  # caught here, not as a stride error at run time
            raise AssertionError(f"{lay.name}: kernel reads {stored} stored features, {lay.input} holds {src_shape}")
        self._register_outputs(epi, out_tensors, oc, None, lanes)
        return Node(lay.name, kernel, spec, consts, [lay.input], out_tensors, ref,
                    flatten_input=len(src_shape) > 1)

    def _register_outputs(self, epi, names, oc, hw, lanes) -> None:
        cs = E.out_channels_stored(epi, oc, lanes)
        for n in names:
            if n in self.shapes and self.shapes[n] != (tuple(hw) if hw else ()) + (cs,):
                raise AssertionError(f"{n}: stored shape {self.shapes[n]} vs kernel output {hw} x {cs}")
        prefix = tuple(hw) if hw else ()
        if isinstance(epi, E.Requant):
            for n, q in zip(names, epi.outputs):
                self.tensors[n] = TensorInfo(prefix + (cs,), q.storage.dtype)
        else:
            self.tensors[names[0]] = TensorInfo(prefix + (cs,), "uint32" if isinstance(epi, E.Threshold) else "float32")


def bn_threshold(bn, acc_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds equivalent to ``sign(BatchNorm(acc * acc_scale)) >= 0``.

    With ``y = a * acc + b`` (``a = gamma * acc_scale / sqrt(var + eps)``), ``y >= 0`` is
    ``acc >= ceil(-b / a)`` for ``a > 0`` and, on negated weights, ``-acc >= ceil(b / a)`` for
    ``a < 0``; ``a == 0`` is constant. Returns ``(thr int64, negate bool)`` per channel.
    """
    g = bn.weight.detach().double().numpy() if bn.affine else np.ones(bn.num_features)
    beta = bn.bias.detach().double().numpy() if bn.affine else np.zeros(bn.num_features)
    mean = bn.running_mean.double().numpy()
    sd = np.sqrt(bn.running_var.double().numpy() + bn.eps)
    a = g / sd * acc_scale.astype(np.float64)
    b = beta - g * mean / sd
    negate = a < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(negate, np.ceil(b / a), np.ceil(-b / a))
    t = np.where(a == 0, np.where(b >= 0, E.INT32_MIN, E.INT32_MAX), t)
    return np.clip(t, E.INT32_MIN, E.INT32_MAX).astype(np.int64), negate


def finish(b: NetworkBuilder, out: Value | None, name: str) -> Network:
    """The network of a walked builder whose output value is ``out`` (the logits layer)."""
    if out is None or out.kind != "acc" or out.layer.ops or out.layer.outputs:
        raise UnsupportedError("the model must end in a quantized layer whose accumulator is the logits")
    out.layer.logits = True
    layer_nodes = [b.layer_node(lay) for lay in b.layers]
    nodes = _toposort(b.input_nodes() + b.extra_nodes + layer_nodes)
    return Network(name, "input", b.input_shape, "logits", nodes, b.tensors, b.ctx)


def _toposort(nodes: list[Node]) -> list[Node]:
    ready = {"input"}
    out: list[Node] = []
    pending = list(nodes)
    while pending:
        for i, n in enumerate(pending):
            if all(t in ready for t in n.inputs):
                out.append(pending.pop(i))
                ready.update(n.outputs)
                break
        else:
            raise UnsupportedError("kernel graph has a cycle or a missing tensor: "
                                   + ", ".join(f"{n.name} needs {sorted(set(n.inputs) - ready)}" for n in pending))
    return out
