"""Fused int8 convolution: uint8/int8 activations x int8 weights, int32 accumulation, fused
max pooling and epilogue (requantization + ReLU, residual add, threshold, or dequantization).

Compute (TE, NHWC storage, weights packed ``[OC/L, KH, KW, C/4, L, 4]``)::

    acc[n, y, x, oc] = sum_{kh, kw, c} X[n, y*s + kh - p, x*s + kw - p, c] * W[oc, c, kh, kw]

with out-of-range taps reading the stored zero (:mod:`robustq_deploy.kernels.layout`), then
``out = epilogue(maxpool(acc) + bias)`` (the bias, including the input zero-point and storage
offset correction, is folded into the epilogue's constants: :func:`robustq_deploy.kernels.epilogue.pack`).
Inputs come as stored NHWC, as the zero-padded "rows" layout (first layers with few channels),
or as a logical NCHW or NHWC tensor that the kernel stages itself (``source``, the compile hook;
``channels_last``: NHWC, read in place when it already has the stored form). A :class:`Raw
<robustq_deploy.kernels.epilogue.Raw>` output is NCHW, or NHWC with ``channels_last`` /
``out_channels_last``.

Schedule (x86 AVX512-VNNI / AArch64 dot product): one parallel task per ``rows`` output rows
of one image (batch and row blocks fused, so batch 1 and batch 64 both use every core); per
task, the padded input rows are staged once; a register tile of ``pixels`` output columns x ``oc_blocks`` lane tiles of
accumulators is computed with the inner ``L x 4`` product tensorized to one dot-product
instruction (``vpdpbusd`` / ``sdot``), then pooled and finished by the vectorized epilogue while
still in registers. Without a dot-product instruction the same tile is vectorized over the
output channels (exact, slower).

The numpy reference is :func:`reference`; tests compare the two bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import epilogue as E
from . import layout as L
from . import reference as R
from .schedule import Lowering, Tile, batch_var, default_tile, divisors, dot_tile, reuse_tile


SOURCE_VECTOR = 16  # lanes of one staging gather from a logical NCHW input


@dataclass(frozen=True)
class Conv2d:
    """Static description of one fused convolution (everything the generated code depends on)."""

    height: int
    width: int
    in_channels: int  # stored channels of the input (multiple of 4); real channels in rows mode
    out_channels: int
    kernel: tuple[int, int]
    stride: int
    pad: int
    input: L.Storage
    pad_value: int  # stored form of the input zero point, read by padded taps
    epilogue: E.Epilogue
    pool: int = 1  # max-pool window and stride after the conv (1: none)
    rows: bool = False  # input in the "rows" layout (see below)
    source: str | None = None  # "uint8"/"int8": input is a logical tensor, staged by the kernel
    channels_last: bool = False  # with ``source``: the logical input is NHWC (and a Raw output too)
    out_channels_last: bool = False  # a Raw output NHWC whatever the input (a logical NCHW input)

    def __post_init__(self):
        if self.in_channels % 4 and not (self.rows or self.source):
            raise ValueError("stored input channels must be a multiple of 4")
        oh, ow = self.conv_hw
        if oh <= 0 or ow <= 0:
            raise ValueError("kernel larger than the padded input")
        if self.pool > 1 and getattr(self.epilogue, "residual", None) is not None:
            raise ValueError("pooling and a residual add cannot be fused in one kernel")

    @property
    def staged(self) -> bool:
        """Whether the kernel copies its input rows into a padded NHWC staging buffer: a logical
        NHWC input already in the stored form (no padding, whole 4-byte channel groups, no
        storage offset) is read in place."""
        if self.rows:
            return False
        if self.source and self.channels_last:
            return bool(self.pad or self.in_channels % 4 or self.input.offset or self.input.dtype != self.source)
        return bool(self.pad or self.source)

    @property
    def conv_hw(self) -> tuple[int, int]:
        kh, kw = self.kernel
        return ((self.height + 2 * self.pad - kh) // self.stride + 1,
                (self.width + 2 * self.pad - kw) // self.stride + 1)

    @property
    def out_hw(self) -> tuple[int, int]:
        oh, ow = self.conv_hw
        return oh // self.pool, ow // self.pool

    @property
    def macs_per_image(self) -> int:
        oh, ow = self.conv_hw
        return oh * ow * self.out_channels * self.kernel[0] * self.kernel[1] * self.in_channels

    # The "rows" layout serves first layers with few channels (MNIST: 1, CIFAR: 3), where NHWC
    # would waste 3 of every 4 bytes of a dot-product group on padding channels: the input is
    # stored already zero-padded as rows of bytes ``[N, H + 2p, (W + 2p) * C + slack]``, so the
    # ``KW * C`` taps of one kernel row are contiguous and are read as ``row_groups`` 4-byte
    # groups (the few bytes past the window meet zero weights).

    @property
    def row_groups(self) -> int:
        return -(-self.kernel[1] * self.in_channels // 4)

    @property
    def row_len(self) -> int:
        c, s, g = self.in_channels, self.stride, self.row_groups
        full = (self.width + 2 * self.pad) * c
        return L.round_up(max(full, (self.conv_hw[1] - 1) * s * c + 4 * g), c)  # whole pixels


def compute(spec: Conv2d, low: Lowering, batch=None):
    """TE tensors ``(inputs, outputs, epilogue stages)`` of the kernel; ``batch`` None is a
    symbolic batch."""
    from tvm import te, tirx

    n_ = batch if batch is not None else batch_var()
    H, W, C = spec.height, spec.width, spec.in_channels
    KH, KW = spec.kernel
    s, p, lanes = spec.stride, spec.pad, low.lanes
    acc_ch = E.acc_channels(spec.epilogue, spec.out_channels, lanes)
    OH, OW = spec.conv_hw
    if spec.rows:
        X = te.placeholder((n_, H + 2 * p, spec.row_len), spec.input.dtype, name="X")
        G = spec.row_groups
        Wt = te.placeholder((acc_ch // lanes, KH, 1, G, lanes, 4), "int8", name="W")
        kh = te.reduce_axis((0, KH), "kh")
        kw = te.reduce_axis((0, 1), "kw")
        cb = te.reduce_axis((0, G), "cb")
        ci = te.reduce_axis((0, 4), "ci")
        acc = te.compute(
            (n_, OH, OW, acc_ch // lanes, lanes),
            lambda n, y, x, ob, ol: te.sum(
                X[n, y * s + kh, (x * s + kw) * C + cb * 4 + ci].astype("int32")
                * Wt[ob, kh, kw, cb, ol, ci].astype("int32"),
                axis=[kh, kw, cb, ci]),
            name="acc")
    else:
        if spec.source and not spec.staged:  # logical NHWC already in the stored form
            X = X_src = te.placeholder((n_, H, W, C), spec.source, name="X")
        elif spec.source:
            # logical NCHW or NHWC input (a compile path's tensor): the staging copy transposes
            # it to NHWC, pads channels to whole 4-byte groups and applies the storage offset
            real_c, dt, off = spec.in_channels, spec.input.dtype, spec.input.offset
            if spec.channels_last:
                X = te.placeholder((n_, H, W, C), spec.source, name="X")

                def logical(n, c, y, x):
                    return X[n, y, x, c]
            else:
                X = te.placeholder((n_, C, H, W), spec.source, name="X")

                def logical(n, c, y, x):
                    return X[n, c, y, x]
            C = L.round_up(C, 4)
            X_src = te.compute(
                (n_, H + 2 * p, W + 2 * p, C),
                lambda n, y, x, c: tirx.if_then_else(
                    tirx.all(y >= p, y < H + p, x >= p, x < W + p, c < real_c),
                    (logical(n, tirx.min(c, real_c - 1), y - p, x - p).astype("int32") + off).astype(dt),
                    tirx.const(spec.pad_value, dt)),
                name="pad")
        elif p:
            X = te.placeholder((n_, H, W, C), spec.input.dtype, name="X")
            X_src = te.compute(
                (n_, H + 2 * p, W + 2 * p, C),
                lambda n, y, x, c: tirx.if_then_else(
                    tirx.all(y >= p, y < H + p, x >= p, x < W + p), X[n, y - p, x - p, c],
                    tirx.const(spec.pad_value, spec.input.dtype)),
                name="pad")
        else:
            X = X_src = te.placeholder((n_, H, W, C), spec.input.dtype, name="X")
        Wt = te.placeholder((acc_ch // lanes, KH, KW, C // 4, lanes, 4), "int8", name="W")
        kh = te.reduce_axis((0, KH), "kh")
        kw = te.reduce_axis((0, KW), "kw")
        cb = te.reduce_axis((0, C // 4), "cb")
        ci = te.reduce_axis((0, 4), "ci")
        acc = te.compute(
            (n_, OH, OW, acc_ch // lanes, lanes),
            lambda n, y, x, ob, ol: te.sum(
                X_src[n, y * s + kh, x * s + kw, cb * 4 + ci].astype("int32")
                * Wt[ob, kh, kw, cb, ol, ci].astype("int32"),
                axis=[kh, kw, cb, ci]),
            name="acc")

    k = spec.pool

    def pooled(n, y, x, ob, ol):
        terms = [acc[n, y * k + i, x * k + j, ob, ol] for i in range(k) for j in range(k)]
        v = terms[0]
        for t in terms[1:]:
            v = tirx.max(v, t)
        return v

    OHo, OWo = spec.out_hw
    res = None
    if getattr(spec.epilogue, "residual", None) is not None:
        res = te.placeholder((n_, OHo, OWo, E.out_channels_stored(spec.epilogue, spec.out_channels, lanes)),
                             spec.epilogue.residual.dtype, name="R")
    params, outs, stages = E.build(spec.epilogue, pooled, (n_, OHo, OWo), spec.out_channels, acc_ch, lanes, res,
                                   channels_last=spec.channels_last or spec.out_channels_last)
    inputs = [X] + ([res] if res is not None else []) + [Wt] + params
    return inputs, outs, stages


def build(spec: Conv2d, low: Lowering, tile: Tile | None = None, batch=None, parallel: bool = True):
    """The scheduled TIR PrimFunc (``(X, [R], W, epilogue params..., outputs...)``)."""
    from tvm import te
    from tvm.s_tir import Schedule

    inputs, outs, stages = compute(spec, low, batch)
    tile = tile or choose_tile(spec, low)
    k = spec.pool
    sch = Schedule(te.create_prim_func(inputs + outs))
    acc = sch.get_sblock("acc")
    n, y, x, ob, ol, kh, kw, cb, ci = sch.get_loops(acc)
    rows = tile.rows or default_rows(spec.out_hw[0])
    yt, yr, yi = sch.split(y, [None, rows, k])
    xo, xi = sch.split(x, [None, tile.pixels * k])
    obo, obi = sch.split(ob, [None, tile.oc_blocks])
    task = sch.fuse(n, yt)  # a parallel task: `rows` output rows of one image
    sch.reorder(task, yr, xo, obo, kh, kw, cb, yi, xi, obi, ol, ci)
    if parallel:
        sch.parallel(task)
    sch.set_scope(acc, 0, "local")
    E.schedule(sch, spec.epilogue, stages, outs, obo, 4, low.lanes, low.movmsk,
               spec.channels_last or spec.out_channels_last)
    if spec.staged:
        # the padded input rows of a task are staged once (rows * stride + KH - 1 rows)
        pad = sch.get_sblock("pad")
        sch.compute_at(pad, task)
        c_loop = sch.get_loops(pad)[-1]
        if spec.source and not spec.channels_last and spec.in_channels > SOURCE_VECTOR:
            # staging a logical NCHW input reads channels with a stride (a gather): vectors of
            # SOURCE_VECTOR lanes, since LLVM's time to legalize one gather of all channels grows
            # steeply with their number (a 576-channel 1x1 layer: 37 s for one function)
            gather = max(d for d in (SOURCE_VECTOR, 8, 4) if L.round_up(spec.in_channels, 4) % d == 0)
            c_loop = sch.split(c_loop, [None, gather])[1]
        sch.vectorize(c_loop)
    dot_tile(sch, acc, low, [kh, kw, cb], [yi, xi, obi], ol, ci)
    return sch.mod["main"].with_attr("global_symbol", "main")


def default_rows(out_rows: int, tasks_per_image: int = 2) -> int:
    """Output rows per parallel task: the largest divisor leaving ``tasks_per_image`` tasks
    per image, so batch 1 still uses two cores while batch 64 stages little padding twice."""
    return max(d for d in divisors(out_rows) if d * tasks_per_image <= out_rows or d == 1)


def choose_tile(spec: Conv2d, low: Lowering) -> Tile:
    """Default register tile; threshold epilogues need whole 32-channel words per tile."""
    tiles = E.acc_channels(spec.epilogue, spec.out_channels, low.lanes) // low.lanes
    if isinstance(spec.epilogue, E.Raw) and spec.pool == 1:  # the per-op path's kernels
        return reuse_tile(spec.out_hw[1], tiles)
    multiple = max(1, 32 // low.lanes) if isinstance(spec.epilogue, E.Threshold) else 1
    return default_tile(spec.out_hw[1], tiles, spec.pool, oc_multiple=multiple)


def pack(spec: Conv2d, low: Lowering, weight: np.ndarray, bias: np.ndarray | None, epi_params: dict,
         x_zero_point: int = 0) -> list[np.ndarray]:
    """Constant operands in PrimFunc order (W, epilogue arrays), from logical OIHW weights,
    the int32 bias and the epilogue's logical per-channel values (:func:`robustq_deploy.kernels.epilogue.pack`)."""
    acc_ch = E.acc_channels(spec.epilogue, spec.out_channels, low.lanes)
    if spec.rows:
        w = L.pack_conv_weight(L.rows_weight(weight, spec.row_groups), low.lanes, spec.row_groups * 4, acc_ch)
    else:
        cin = L.round_up(spec.in_channels, 4) if spec.source else spec.in_channels
        w = L.pack_conv_weight(weight, low.lanes, cin, acc_ch)
    b = L.fold_bias(bias, weight, x_zero_point + spec.input.offset, acc_ch)
    return [w] + E.pack(spec.epilogue, epi_params, b, acc_ch)


def reference(spec: Conv2d, x_levels: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
              epi_params: dict, x_zero_point: int = 0, residual_levels: np.ndarray | None = None) -> list[np.ndarray]:
    """Numpy result on logical NCHW values: levels (int64) per requantized output, {-1,+1}
    for a threshold, float32 logits for a dequantization."""
    acc = R.conv2d_acc(x_levels, weight, bias, spec.stride, spec.pad, x_zero_point)
    if spec.pool > 1:
        acc = R.maxpool2d(acc, spec.pool)
    return E.reference(spec.epilogue, acc, epi_params, residual_levels, axis=1)
