"""Bit-packed binary convolution and dense layers: XNOR + popcount on 32-bit words.

Inputs and weights are {-1, +1}, packed 32 per uint32 word along channels
(:func:`robustq_deploy.kernels.reference.pack_bits`: set bit = +1). For ``K`` real terms,

    dot = K - 2 * popcount(x XOR w)

summed over the words of a receptive field. Padded bits (channels beyond a multiple of 32) are
0 in both operands, so they never count as disagreements and ``K`` is the real term count.
The project's binary layers have no zero padding (a zero is not a binary value), so the
convolution takes none.

The ``dot`` is then max-pooled (optional) and finished by a fused epilogue
(:mod:`robustq_deploy.kernels.epilogue`): a threshold to the next layer's bits (BatchNorm + sign folded), a
requantization, or a dequantization to logits (``(dot + bias) * scale``).

Schedule: the same register tile as the int8 kernels: ``pixels x oc_blocks`` vectors of int32
counts, each step broadcasting one input word, XOR-ing it with ``L`` weight words (one per
output channel, lane-major packing ``[OC/L, KH, KW, CW, L]``) and adding the vector popcount
(tensor intrinsic :func:`robustq_deploy.kernels.intrin.xor_popcount_intrin`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import epilogue as E
from . import layout as L
from . import reference as R
from .features import Features
from .intrin import xor_popcount_intrin
from .schedule import Tile, batch_var, default_tile, divisors

WORD = 32


@dataclass(frozen=True)
class BitLowering:
    """How one CPU runs XNOR-popcount: uint32 lanes per vector register (16 AVX-512, 8 AVX2,
    4 NEON) and whether bits are counted per byte and summed with ``vpdpbusd`` (VNNI without
    VPOPCNTDQ, see :func:`robustq_deploy.kernels.intrin.xor_popcount_intrin`)."""

    lanes: int
    byte_dot: bool = False
    movmsk: bool = False  # x86 AVX: threshold bits gathered with vmovmskps

    @property
    def intrin(self) -> str:
        return xor_popcount_intrin(self.lanes, self.byte_dot)


def bit_lowering(features: Features) -> BitLowering:
    if features.arch == "aarch64":
        return BitLowering(4)
    if not features.avx512:
        return BitLowering(8, movmsk=features.avx2)
    return BitLowering(16, byte_dot=features.vnni and not features.vpopcntdq, movmsk=True)


def words(channels: int) -> int:
    return -(-channels // WORD)


@dataclass(frozen=True)
class BinaryConv2d:
    height: int
    width: int
    in_channels: int  # real channels (K counts them); stored as words(in_channels) words
    out_channels: int
    kernel: tuple[int, int]
    stride: int
    epilogue: E.Epilogue
    pool: int = 1
    source: bool = False  # input is a logical int8 {-1,+1} NCHW tensor, bit-packed by the kernel

    def __post_init__(self):
        if self.conv_hw[0] <= 0 or self.conv_hw[1] <= 0:
            raise ValueError("kernel larger than the input")
        if getattr(self.epilogue, "residual", None) is not None:
            raise ValueError("binary kernels take no residual input")

    @property
    def conv_hw(self) -> tuple[int, int]:
        kh, kw = self.kernel
        return (self.height - kh) // self.stride + 1, (self.width - kw) // self.stride + 1

    @property
    def out_hw(self) -> tuple[int, int]:
        oh, ow = self.conv_hw
        return oh // self.pool, ow // self.pool

    @property
    def terms(self) -> int:
        return self.kernel[0] * self.kernel[1] * self.in_channels

    @property
    def word_ops_per_image(self) -> int:
        oh, ow = self.conv_hw
        return oh * ow * self.out_channels * self.kernel[0] * self.kernel[1] * words(self.in_channels)


@dataclass(frozen=True)
class BinaryDense:
    in_features: int  # real features (the dot's K)
    out_channels: int
    epilogue: E.Epilogue
    in_words: int = 0  # stored words per row when padding bits sit inside (flattened NHWC); 0: packed
    source: bool = False  # input is a logical int8 {-1,+1} [N, K] tensor, bit-packed by the kernel

    @property
    def terms(self) -> int:
        return self.in_features

    @property
    def stored_words(self) -> int:
        return self.in_words or words(self.in_features)

    @property
    def word_ops_per_image(self) -> int:
        return self.out_channels * self.stored_words


def _acc_channels(spec, lanes: int) -> int:
    return E.acc_channels(spec.epilogue, spec.out_channels, lanes)


def _pack_stage(value, shape: tuple, channels: int):
    """Bit-pack the last axis of a logical {-1,+1} tensor (``value(*idx, channel)``) into
    uint32 words: bit b of word j is channel 32j+b, set for +1, padded channels clear."""
    from tvm import te, tirx

    b = te.reduce_axis((0, WORD), "b")

    def word(*i):
        c = i[-1] * WORD + b
        bit = tirx.if_then_else(tirx.all(c < channels, value(*i[:-1], tirx.min(c, channels - 1)) > 0),
                                tirx.const(1, "uint32") << b.astype("uint32"), tirx.const(0, "uint32"))
        return te.sum(bit, axis=[b])
    return te.compute(shape, word, name="pack")


def compute_conv(spec: BinaryConv2d, lanes: int, batch=None):
    from tvm import te, tirx

    n_ = batch if batch is not None else batch_var()
    KH, KW = spec.kernel
    cw_n, s = words(spec.in_channels), spec.stride
    acc_ch = _acc_channels(spec, lanes)
    OH, OW = spec.conv_hw
    if spec.source:
        X = te.placeholder((n_, spec.in_channels, spec.height, spec.width), "int8", name="X")
        Xw = _pack_stage(lambda n, y, x, c: X[n, c, y, x], (n_, spec.height, spec.width, cw_n), spec.in_channels)
    else:
        X = Xw = te.placeholder((n_, spec.height, spec.width, cw_n), "uint32", name="X")
    Wt = te.placeholder((acc_ch // lanes, KH, KW, cw_n, lanes), "uint32", name="W")
    kh, kw = te.reduce_axis((0, KH), "kh"), te.reduce_axis((0, KW), "kw")
    cw = te.reduce_axis((0, cw_n), "cw")
    acc = te.compute(
        (n_, OH, OW, acc_ch // lanes, lanes),
        lambda n, y, x, ob, ol: te.sum(
            tirx.popcount(Xw[n, y * s + kh, x * s + kw, cw] ^ Wt[ob, kh, kw, cw, ol]).astype("int32"),
            axis=[kh, kw, cw]),
        name="acc")
    k, terms = spec.pool, spec.terms

    def pooled(n, y, x, ob, ol):
        # max of dot = K - 2 * popcount is K - 2 * min(popcount)
        v = acc[n, y * k, x * k, ob, ol]
        for i in range(k):
            for j in range(k):
                if i or j:
                    v = tirx.min(v, acc[n, y * k + i, x * k + j, ob, ol])
        return terms - 2 * v

    OHo, OWo = spec.out_hw
    params, outs, stages = E.build(spec.epilogue, pooled, (n_, OHo, OWo), spec.out_channels, acc_ch, lanes)
    return [X, Wt] + params, outs, stages


def compute_dense(spec: BinaryDense, lanes: int, batch=None):
    from tvm import te, tirx

    n_ = batch if batch is not None else batch_var()
    kw_n = spec.stored_words
    acc_ch = _acc_channels(spec, lanes)
    if spec.source:
        X = te.placeholder((n_, spec.in_features), "int8", name="X")
        Xw = _pack_stage(lambda n, k: X[n, k], (n_, kw_n), spec.in_features)
    else:
        X = Xw = te.placeholder((n_, kw_n), "uint32", name="X")
    Wt = te.placeholder((acc_ch // lanes, kw_n, lanes), "uint32", name="W")
    kk = te.reduce_axis((0, kw_n), "kk")
    acc = te.compute(
        (n_, acc_ch // lanes, lanes),
        lambda n, ob, ol: te.sum(tirx.popcount(Xw[n, kk] ^ Wt[ob, kk, ol]).astype("int32"), axis=[kk]),
        name="acc")
    terms = spec.terms
    params, outs, stages = E.build(spec.epilogue, lambda n, ob, ol: terms - 2 * acc[n, ob, ol],
                                   (n_,), spec.out_channels, acc_ch, lanes)
    return [X, Wt] + params, outs, stages


def _finish(sch, acc, bits: BitLowering, reduce_outer, tile_loops, ol, spec, stages, outs, at, depth) -> None:
    sch.set_scope(acc, 0, "local")
    E.schedule(sch, spec.epilogue, stages, outs, at, depth, bits.lanes, bits.movmsk)
    init = sch.decompose_reduction(acc, reduce_outer[0])
    sch.tensorize(ol, bits.intrin)
    sch.vectorize(sch.get_loops(init)[-1])
    for lp in tile_loops:
        sch.unroll(lp)


def _tile_multiple(spec, lanes: int) -> int:
    return max(1, WORD // lanes) if isinstance(spec.epilogue, E.Threshold) else 1


def build_conv(spec: BinaryConv2d, bits: BitLowering, tile: Tile | None = None, batch=None, parallel: bool = True):
    from tvm import te
    from tvm.s_tir import Schedule

    lanes = bits.lanes
    inputs, outs, stages = compute_conv(spec, lanes, batch)
    tile = tile or default_tile(spec.out_hw[1], _acc_channels(spec, lanes) // lanes, spec.pool,
                                oc_multiple=_tile_multiple(spec, lanes))
    k = spec.pool
    sch = Schedule(te.create_prim_func(inputs + outs))
    acc = sch.get_sblock("acc")
    n, y, x, ob, ol, kh, kw, cw = sch.get_loops(acc)
    yo, yi = sch.split(y, [None, k])
    xo, xi = sch.split(x, [None, tile.pixels * k])
    obo, obi = sch.split(ob, [None, tile.oc_blocks])
    row = sch.fuse(n, yo)
    sch.reorder(row, xo, obo, kh, kw, cw, yi, xi, obi, ol)
    if parallel:
        sch.parallel(row)
    if spec.source:
        sch.compute_at(sch.get_sblock("pack"), row)
    _finish(sch, acc, bits, [kh, kw, cw], [yi, xi, obi], ol, spec, stages, outs, obo, 3)
    return sch.mod["main"].with_attr("global_symbol", "main")


def build_dense(spec: BinaryDense, bits: BitLowering, tile: Tile | None = None, batch=None, parallel: bool = True):
    from tvm import te
    from tvm.s_tir import Schedule

    lanes = bits.lanes
    inputs, outs, stages = compute_dense(spec, lanes, batch)
    tiles = _acc_channels(spec, lanes) // lanes
    mult = _tile_multiple(spec, lanes)
    tile = tile or Tile(1, max(d for d in divisors(tiles) if d % mult == 0 and d <= max(8, mult)))
    sch = Schedule(te.create_prim_func(inputs + outs))
    acc = sch.get_sblock("acc")
    n, ob, ol, kk = sch.get_loops(acc)
    obo, obi = sch.split(ob, [None, tile.oc_blocks])
    sch.reorder(n, obo, kk, obi, ol)
    task = sch.fuse(n, obo)
    if parallel:
        sch.parallel(task)
    if spec.source:
        sch.compute_at(sch.get_sblock("pack"), task)
    _finish(sch, acc, bits, [kk], [obi], ol, spec, stages, outs, task, 1)
    return sch.mod["main"].with_attr("global_symbol", "main")


def pack_conv(spec: BinaryConv2d, lanes: int, weight_pm1: np.ndarray, bias: np.ndarray | None,
              epi_params: dict) -> list[np.ndarray]:
    """Constant operands (W words, epilogue arrays) from OIHW {-1,+1} weights."""
    acc_ch = _acc_channels(spec, lanes)
    oc = weight_pm1.shape[0]
    w = L.pack_bits(np.moveaxis(weight_pm1, 1, -1), axis=-1)  # [OC, KH, KW, CW]
    full = np.zeros((acc_ch,) + w.shape[1:], np.uint32)
    full[:oc] = w
    packed = full.reshape(acc_ch // lanes, lanes, *w.shape[1:]).transpose(0, 2, 3, 4, 1)
    b = L.pad_vector(bias if bias is not None else np.zeros(oc), acc_ch, 0, np.int64)
    return [np.ascontiguousarray(packed)] + E.pack(spec.epilogue, epi_params, b, acc_ch)


def pack_dense(spec: BinaryDense, lanes: int, weight_pm1: np.ndarray, bias: np.ndarray | None,
               epi_params: dict) -> list[np.ndarray]:
    """Constant operands from a [OC, K] {-1,+1} weight whose columns are in stored order
    (already packed words [OC, stored_words] are taken as they are)."""
    acc_ch = _acc_channels(spec, lanes)
    oc = weight_pm1.shape[0]
    w = weight_pm1 if weight_pm1.dtype == np.uint32 else L.pack_bits(weight_pm1, axis=-1)  # [OC, KW]
    if w.shape[1] != spec.stored_words:
        raise ValueError(f"packed weight has {w.shape[1]} words per row, the layer stores {spec.stored_words}")
    full = np.zeros((acc_ch, w.shape[1]), np.uint32)
    full[:oc] = w
    packed = full.reshape(acc_ch // lanes, lanes, -1).transpose(0, 2, 1)
    b = L.pad_vector(bias if bias is not None else np.zeros(oc), acc_ch, 0, np.int64)
    return [np.ascontiguousarray(packed)] + E.pack(spec.epilogue, epi_params, b, acc_ch)


def reference_conv(spec: BinaryConv2d, x_pm1: np.ndarray, weight_pm1: np.ndarray, bias, epi_params: dict):
    acc = R.conv2d_acc(x_pm1, weight_pm1, bias, spec.stride, 0)
    if spec.pool > 1:
        acc = R.maxpool2d(acc, spec.pool)
    return E.reference(spec.epilogue, acc, epi_params, axis=1)


def reference_dense(spec: BinaryDense, x_pm1: np.ndarray, weight_pm1: np.ndarray, bias, epi_params: dict):
    return E.reference(spec.epilogue, R.dense_acc(x_pm1, weight_pm1, bias), epi_params, axis=1)
