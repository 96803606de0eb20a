"""Depthwise int8 convolution (``group == channels``, one filter per channel) for the compile
stage's per-op hook, on NHWC tensors (the layout activations keep between the hook's kernels):
the int32 accumulator, or (``Depthwise.requant``) that accumulator plus bias rescaled onto an
8-bit grid in the same loop (:func:`..epilogue.float_requant`).

Compute (TE, NHWC uint8/int8 input, zero point ``zp``, int32 weights ``[KH, KW, C]``)::

    acc[n, y, x, c] = sum_{kh, kw} (X[n, y*s + kh - p, x*s + kw - p, c] - zp) * W[kh, kw, c]

with out-of-range taps reading ``zp`` (so they contribute nothing). The padded input rows are
staged as they are (padding holds the zero point) and ``zp * sum(w)`` is folded into the bias
(:func:`pack`). A depthwise filter reduces over the taps of one channel, so no dot-product
instruction applies (``vpdpbusd`` and ``sdot`` reduce over 4 neighbouring channels); the kernel
is vectorized over channels instead.

Schedule: one parallel task per block of output rows of one image (two per image); the task's
padded input rows staged once; a register tile of :data:`PIXELS` output pixels x one channel
vector held across the unrolled taps (one vector multiply-add per tap and pixel).

The numpy reference is :func:`reference` (logical NCHW); tests compare the two bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import epilogue as E


@dataclass(frozen=True)
class Depthwise:
    """Static description of one depthwise convolution."""

    height: int
    width: int
    channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, left, bottom, right
    source: str  # "uint8" / "int8": the logical input's dtype
    zero_point: int
    requant: E.FloatRequant | None = None  # fused rescale (multiplier operand), else int32 out

    def __post_init__(self):
        oh, ow = self.out_hw
        if oh <= 0 or ow <= 0:
            raise ValueError("kernel larger than the padded input")

    @property
    def out_hw(self) -> tuple[int, int]:
        kh, kw = self.kernel
        t, lft, b, r = self.pad
        return ((self.height + t + b - kh) // self.stride[0] + 1, (self.width + lft + r - kw) // self.stride[1] + 1)

    @property
    def macs_per_image(self) -> int:
        oh, ow = self.out_hw
        return oh * ow * self.channels * self.kernel[0] * self.kernel[1]


def _finish(spec: Depthwise, shape, taps, inputs):
    """The output stage: accumulator plus bias (int32), or (``spec.requant``) that rescaled."""
    from tvm import te

    c = spec.channels
    bias = te.placeholder((c,), "int32", name="bias")
    if spec.requant is None:
        return inputs + [bias], te.compute(shape, lambda *i: taps(*i) + bias[i[3]], name="acc")
    mult = te.placeholder((c,), "float32", name="mult")
    out = te.compute(shape, lambda *i: E.float_requant(spec.requant, taps(*i) + bias[i[3]], mult[i[3]]), name="acc")
    return inputs + [bias, mult], out


def compute(spec: Depthwise, batch):
    """TE tensors ``(inputs, output)``: a strided tap reads whole channel vectors."""
    from tvm import te, tirx

    c, h, w = spec.channels, spec.height, spec.width
    kh, kw = spec.kernel
    sh, sw = spec.stride
    t, lft, _, _ = spec.pad
    oh, ow = spec.out_hw
    x = te.placeholder((batch, h, w, c), spec.source, name="X")
    wt = te.placeholder((kh, kw, c), "int32", name="W")
    ph, pw = (oh - 1) * sh + kh, (ow - 1) * sw + kw

    def staged(n, yy, xx, ch):
        inside = tirx.all(yy >= t, yy < h + t, xx >= lft, xx < w + lft)
        v = x[n, tirx.min(tirx.max(yy - t, 0), h - 1), tirx.min(tirx.max(xx - lft, 0), w - 1), ch]
        return tirx.if_then_else(inside, v, tirx.const(spec.zero_point, spec.source))

    pad = te.compute((batch, ph, pw, c), staged, name="pad")

    def taps(n, yy, xx, ch):
        total = None
        for i in range(kh):
            for j in range(kw):
                term = pad[n, yy * sh + i, xx * sw + j, ch].astype("int32") * wt[i, j, ch]
                total = term if total is None else total + term
        return total

    return _finish(spec, (batch, oh, ow, c), taps, [x, wt])


def build(spec: Depthwise, lanes: int, batch=None):
    """The scheduled TIR PrimFunc ``(X, W, bias, [mult,] out)``; ``lanes``: int32 lanes of the target's vectors.
    One parallel task per block of output rows of one image (two per image, as the convolution);
    its padded input rows staged once; a tile of :data:`PIXELS` output pixels x one channel
    vector held in registers across the unrolled taps."""
    from tvm import te
    from tvm.s_tir import Schedule

    from .int8_conv2d import default_rows
    from .schedule import batch_var

    inputs, acc = compute(spec, batch if batch is not None else batch_var())
    sch = Schedule(te.create_prim_func(inputs + [acc]))
    oh, ow = spec.out_hw
    vec = _channel_vector(spec.channels, lanes)
    blk = sch.get_sblock("acc")
    n, y, x, c = sch.get_loops(blk)
    yo, yi = sch.split(y, [None, default_rows(oh)])
    pix = max(d for d in range(1, PIXELS + 1) if ow % d == 0)
    xo, xi = sch.split(x, [None, pix])
    co, ci = sch.split(c, [None, vec])
    task = sch.fuse(n, yo)
    sch.reorder(task, co, yi, xo, xi, ci)
    sch.parallel(task)
    sch.unroll(xi)
    sch.vectorize(ci)
    pad = sch.get_sblock("pad")
    sch.compute_at(pad, task)
    pc = sch.get_loops(pad)[-1]
    sch.vectorize(sch.split(pc, [None, vec])[1])
    return sch.mod["main"].with_attr("global_symbol", "main")


PIXELS = 4  # output pixels per register tile of the channels-last kernel


def _channel_vector(channels: int, lanes: int) -> int:
    """Channels per vector: ``lanes``, or the largest smaller power of two dividing ``channels``."""
    v = lanes
    while v > 1 and channels % v:
        v //= 2
    return v


def pack(weight: np.ndarray, bias: np.ndarray | None = None, mult: np.ndarray | None = None,
         zero_point: int = 0) -> list[np.ndarray]:
    """Constant operands from the logical ``[C, 1, KH, KW]`` int8 weights: weights ``[KH, KW, C]``,
    the int32 bias plus ``-zero_point * sum(w[c])`` (the kernel multiplies the stored values, not
    the values minus the zero point), and for a fused rescale the float32 multiplier per channel."""
    c = weight.shape[0]
    w = weight.reshape(c, weight.shape[2], weight.shape[3]).astype(np.int32)
    b = np.zeros(c, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(c)
    b = b - zero_point * w.reshape(c, -1).sum(axis=1, dtype=np.int64)
    out = [np.ascontiguousarray(w.transpose(1, 2, 0)), b.astype(np.int32)]
    return out if mult is None else out + [np.asarray(mult, np.float32).reshape(c)]


def reference(spec: Depthwise, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
              mult: np.ndarray | None = None) -> np.ndarray:
    """Numpy int32 accumulator on logical NCHW levels ``x`` and ``[C, 1, KH, KW]`` weights
    (with ``spec.requant``: plus ``bias``, rescaled by ``mult`` onto the 8-bit grid)."""
    t, lft, b, r = spec.pad
    kh, kw = spec.kernel
    sh, sw = spec.stride
    oh, ow = spec.out_hw
    xp = np.pad(x.astype(np.int64) - spec.zero_point, ((0, 0), (0, 0), (t, b), (lft, r)))
    w = weight.astype(np.int64).reshape(spec.channels, kh, kw)
    out = np.zeros((x.shape[0], spec.channels, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            out += tap * w[None, :, i, j, None, None]
    if spec.requant is None:
        return out.astype(np.int32)
    b = np.zeros(spec.channels, np.int64) if bias is None else np.asarray(bias, np.int64)
    (levels,) = E.reference(E.Raw(spec.requant), out + b.reshape(1, -1, 1, 1), {"mult": mult})
    return levels
