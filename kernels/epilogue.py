"""Fused epilogues: what a kernel does with its int32 accumulator before storing it.

Fusing the epilogue into the kernel means the accumulator tile never leaves registers: it is
max-pooled (optional), then turned into the layer's output in the same loop nest.

* :class:`Requant`: fixed-point requantization (``robustq_deploy.fixed_point``) to one or
  more output grids, ReLU folded into each clamp; optionally a residual add first: the
  accumulator is requantized onto the add's grid, the residual operand (already on that grid)
  is added exactly, and the sum is requantized for each consumer (a ResNet block's output feeds
  two consumers with different grids).
* :class:`Threshold`: BatchNorm + sign folded into ``acc >= thr[c]``; output bit-packed words.
* :class:`Dequant`: ``float32(acc) * scale[c]``, the network's logits.

The layer's semantics are always ``epilogue(maxpool(acc) + bias)`` (:func:`reference`). The
kernels fold the int32 bias into per-channel constants at pack time (:func:`pack`) so the hot
code multiplies the raw accumulator: ``((acc + b) * m0 + 2**(n-1)) >> n`` becomes
``(acc * m0 + off) >> n`` with ``off = b * m0 + 2**(n-1)`` (one ``vpmuldq`` instead of a 64-bit
``vpmullq`` on a widened sum), a threshold becomes ``acc >= thr - b``.

Max pooling is applied to the accumulator *before* the epilogue. That equals pooling after it
because every epilogue is monotone non-decreasing in ``acc`` (multipliers are >= 0, scales > 0,
and negative-slope thresholds are folded into negated weights).

An epilogue is static (frozen dataclass: ranges, storage); its per-channel arrays are
run-time operands of the kernel (:meth:`params`). To add one, add a dataclass with ``params``
and handle it in :func:`build`, :func:`pack` and :func:`reference`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from ..fixed_point import requantize

from .intrin import THRESHOLD_LIMIT
from .layout import Storage, pad_vector, round_up

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
FLOAT_INT_LIMIT = float(1 << 24)  # float -> int32 conversions clip here first (exact in float32)


@dataclass(frozen=True)
class QuantOut:
    """One requantized output: its grid (zero point, clamp range) and how it is stored."""

    zero_point: int
    qmin: int
    qmax: int
    storage: Storage


@dataclass(frozen=True)
class Requant:
    outputs: tuple[QuantOut, ...]
    residual: Storage | None = None  # storage of the residual operand, on the add's grid
    add_range: tuple[int, int] = (-127, 127)  # clamp of the accumulator requantized to the add's grid

    def params(self) -> list[tuple[str, str]]:
        names = [("add_m0", "int32"), ("add_shift", "int32"), ("add_off", "int64")] if self.residual else []
        for i in range(len(self.outputs)):
            names += [(f"m0_{i}", "int32"), (f"shift_{i}", "int32"), (f"off_{i}", "int64")]
        return names


@dataclass(frozen=True)
class Threshold:
    """``+1`` where ``acc >= thr[c]``: outputs uint32 words, 32 channels each."""

    def params(self) -> list[tuple[str, str]]:
        return [("thr", "int32")]


@dataclass(frozen=True)
class Dequant:
    def params(self) -> list[tuple[str, str]]:
        return [("bias", "int32"), ("scale", "float32")]


@dataclass(frozen=True)
class FloatRequant:
    """onnxruntime's QLinear* rescale of ``acc + bias`` onto an 8-bit grid (:class:`Raw`'s option)."""

    zero_point: int
    lo: int  # the output clamp: the grid, narrowed by a fused ReLU / Clip
    hi: int
    dtype: str  # "uint8" / "int8": the logical output


@dataclass(frozen=True)
class Raw:
    """The int32 accumulator itself (``acc + bias``), channels first (NCHW / [N, C]): what a
    compile path that requantizes in its own graph consumes (:mod:`robustq_deploy.compile.tiled`).

    With ``requant``, the output is instead ``saturate(nearbyint(float32(acc + bias) * mult[c]) +
    zp)`` on the 8-bit grid, bit for bit :func:`robustq_deploy.compile.arith.requantize_float`
    (onnxruntime's float rescale; float32 ``nearbyint`` rounds half to even, values clipped to
    +-2^24 before the int32 conversion): the compile path's requantization fused into the kernel,
    so the int32 tensor is never stored."""

    requant: FloatRequant | None = None

    def params(self) -> list[tuple[str, str]]:
        return [("bias", "int32")] + ([("mult", "float32")] if self.requant else [])

    @property
    def dtype(self) -> str:
        return self.requant.dtype if self.requant else "int32"


Epilogue = Union[Requant, Threshold, Dequant, Raw]


def out_channels_stored(epi: Epilogue, out_channels: int, lanes: int) -> int:
    """Channels (or words) of the stored output: full lane tiles for activations, words for
    bits, the exact count for logits."""
    if isinstance(epi, Threshold):
        return round_up(out_channels, 32) // 32
    if isinstance(epi, (Dequant, Raw)):
        return out_channels
    return round_up(out_channels, lanes)


def acc_channels(epi: Epilogue, out_channels: int, lanes: int) -> int:
    """Accumulator channels the kernel computes (padded so every output reads valid lanes)."""
    return round_up(out_channels, 32 if isinstance(epi, Threshold) else lanes)


# --------------------------------------------------------------------------- TE (kernels)


def float_requant(q: FloatRequant, v, mult):
    """TE: ``saturate(nearbyint(float32(v) * mult) + zp)`` of an int32 expression (:class:`Raw`)."""
    from tvm import tirx

    f = tirx.nearbyint(v.astype("float32") * mult)
    f = tirx.max(tirx.min(f, tirx.const(FLOAT_INT_LIMIT, "float32")), tirx.const(-FLOAT_INT_LIMIT, "float32"))
    r = f.astype("int32") + tirx.const(q.zero_point, "int32")
    return tirx.max(tirx.min(r, tirx.const(q.hi, "int32")), tirx.const(q.lo, "int32")).astype(q.dtype)


def _shift_round(v64, m0, shift, off):
    """``(v * m0 + off) >> shift`` in int64 (``off`` carries the rounding half and the bias)."""
    return (v64 * m0.astype("int64") + off) >> shift.astype("int64")


def _clamp(v, lo: int, hi: int):
    """Clamp of an int64 expression."""
    from tvm import tirx

    return tirx.max(tirx.min(v, tirx.const(hi, "int64")), tirx.const(lo, "int64"))


def build(epi: Epilogue, acc: Callable, prefix: tuple, out_channels: int, acc_ch: int, lanes: int,
          residual=None, name: str = "out", channels_last: bool = False):
    """TE epilogue over ``prefix + (channels,)``; ``acc(*idx, ob, ol)`` is the (pooled) raw
    accumulator of channel ``ob * lanes + ol`` (no bias: :func:`pack` folds it).

    Returns ``(param placeholders, output tensors, intermediate stages)``; a schedule places
    the intermediate stages, then the outputs, under the accumulator tile. A :class:`Raw`
    output is channels first unless ``channels_last``.
    """
    from tvm import te, tirx

    params = [te.placeholder((acc_ch,), dt, name=n) for n, dt in epi.params()]
    cs = out_channels_stored(epi, out_channels, lanes)
    shape = tuple(prefix) + (cs,)

    def at(*i):
        return acc(*i[:-1], i[-1] // lanes, i[-1] % lanes)

    if isinstance(epi, Dequant):
        bias, scale = params
        out = te.compute(shape, lambda *i: (at(*i) + bias[i[-1]]).astype("float32") * scale[i[-1]], name=name)
        return params, [out], []
    if isinstance(epi, Raw):
        bias = params[0]

        def finish(v, c):
            return v if epi.requant is None else float_requant(epi.requant, v, params[1][c])

        if len(prefix) > 1 and not channels_last:  # channels first: [N, C, *spatial]
            out = te.compute((prefix[0], cs) + tuple(prefix[1:]),
                             lambda n, c, *sp: finish(at(n, *sp, c) + bias[c], c), name=name)
        else:
            out = te.compute(shape, lambda *i: finish(at(*i) + bias[i[-1]], i[-1]), name=name)
        return params, [out], []
    if isinstance(epi, Threshold):
        (thr,) = params
        per_word = 32 // lanes
        bi = te.reduce_axis((0, lanes), "bi")
        tile = tuple(prefix) + (acc_ch // lanes,)
        # (pooled) accumulators per lane tile, their comparison as a `lanes`-bit field, and the
        # OR of a word's fields: each stage has an affine region, so all fuse under the tile
        pooled = te.compute(tile + (lanes,), lambda *i: acc(*i), name=f"{name}_acc")
        part = te.compute(
            tile,
            lambda *i: te.sum(tirx.if_then_else(thr[i[-1] * lanes + bi] <= pooled(*i, bi),
                                                tirx.const(1, "uint32") << bi.astype("uint32"),
                                                tirx.const(0, "uint32")), axis=[bi]),
            name=f"{name}_bits")

        def word(*i):
            w = part(*i[:-1], i[-1] * per_word)
            for t in range(1, per_word):
                w = w | (part(*i[:-1], i[-1] * per_word + t) << tirx.const(t * lanes, "uint32"))
            return w
        return params, [te.compute(shape, word, name=name)], [pooled, part]

    stages = []
    k = 0
    if epi.residual is not None:
        am0, ash, aoff = params[:3]
        k = 3
        lo, hi = epi.add_range
        total = te.compute(
            shape,
            lambda *i: (_clamp(_shift_round(at(*i).astype("int64"), am0[i[-1]], ash[i[-1]], aoff[i[-1]]), lo, hi)
                        + (residual[i].astype("int64") - epi.residual.offset)).astype("int32"),
            name=f"{name}_sum")
        stages.append(total)

        def value(*i):
            return total(*i)
    else:
        value = at

    def requant_to(q: QuantOut, m0, sh, off):
        def f(*i):
            c = i[-1]
            v = _shift_round(value(*i).astype("int64"), m0[c], sh[c], off[c]) + q.zero_point
            return (_clamp(v, q.qmin, q.qmax) + q.storage.offset).astype(q.storage.dtype)
        return f

    outs = [te.compute(shape, requant_to(q, *params[k + 3 * j:k + 3 * j + 3]), name=f"{name}{j}" if j else name)
            for j, q in enumerate(epi.outputs)]
    return params, outs, stages


# ------------------------------------------------------------------ numpy (pack, reference)


def pack(epi: Epilogue, values: dict, bias: np.ndarray, acc_ch: int) -> list[np.ndarray]:
    """The kernel's per-channel arrays (in :meth:`params` order, padded to ``acc_ch``) from the
    layer's logical values and its int32 ``bias`` (already holding the input zero-point
    correction, :func:`robustq_deploy.kernels.layout.fold_bias`; padded to ``acc_ch``).

    ``values``: ``m0_i``/``shift_i`` (and ``add_m0``/``add_shift``) for :class:`Requant`, ``thr``
    for :class:`Threshold`, ``scale`` for :class:`Dequant`. Padded channels get a zero
    multiplier, an unreachable threshold (bit 0, like padded input bits) or scale 0.
    Thresholds are clipped to ``+-THRESHOLD_LIMIT``, beyond any accumulator the kernels allow.
    """
    b = np.asarray(bias, np.int64)
    oc = len(next(iter(values.values()))) if values else len(b)

    def chan(name, fill, dtype):
        return pad_vector(np.asarray(values[name]), acc_ch, fill, np.dtype(dtype))

    if isinstance(epi, Raw):
        return [b.astype(np.int32)] + ([chan("mult", 0, "float32")] if epi.requant else [])
    if isinstance(epi, Dequant):
        return [b.astype(np.int32), chan("scale", 0, "float32")]
    if isinstance(epi, Threshold):
        # |acc| < THRESHOLD_LIMIT in every kernel, so thresholds beyond it are "always"/"never"
        thr = np.clip(chan("thr", THRESHOLD_LIMIT, "int64") - b, -THRESHOLD_LIMIT, THRESHOLD_LIMIT)
        thr[oc:] = THRESHOLD_LIMIT
        return [thr.astype(np.int32)]
    out = []

    def fixed(m0_name, shift_name, with_bias):
        m0 = chan(m0_name, 0, "int64")
        sh = chan(shift_name, 1, "int64")
        off = (b * m0 if with_bias else 0) + (np.int64(1) << (sh - 1))
        return [m0.astype(np.int32), sh.astype(np.int32), off.astype(np.int64)]

    if epi.residual is not None:
        out += fixed("add_m0", "add_shift", True)
    for i in range(len(epi.outputs)):
        out += fixed(f"m0_{i}", f"shift_{i}", epi.residual is None)
    return out


def reference(epi: Epilogue, acc: np.ndarray, p: dict, residual=None, axis: int = 1) -> list[np.ndarray]:
    """The epilogue on an int64 accumulator that already includes the bias, channels on
    ``axis``: levels per requantized output, {-1,+1} for a threshold, float32 logits."""
    def ch(v):
        shape = [1] * acc.ndim
        shape[axis] = -1
        return np.asarray(v).reshape(shape)

    if isinstance(epi, Raw):
        q = epi.requant
        if q is None:
            return [acc.astype(np.int32)]
        f = np.rint(acc.astype(np.float32) * ch(p["mult"]).astype(np.float32))  # float32 product, half to even
        r = np.clip(f, -FLOAT_INT_LIMIT, FLOAT_INT_LIMIT).astype(np.int64) + q.zero_point
        return [np.clip(r, q.lo, q.hi).astype(q.dtype)]
    if isinstance(epi, Dequant):
        return [acc.astype(np.float32) * ch(p["scale"]).astype(np.float32)]
    if isinstance(epi, Threshold):
        return [np.where(acc >= ch(p["thr"]).astype(np.int64), 1, -1).astype(np.int8)]
    v = acc
    if epi.residual is not None:
        lo, hi = epi.add_range
        v = requantize(acc, ch(p["add_m0"]), ch(p["add_shift"]), 0, lo, hi) + residual
    return [requantize(v, ch(p[f"m0_{i}"]), ch(p[f"shift_{i}"]), q.zero_point, q.qmin, q.qmax)
            for i, q in enumerate(epi.outputs)]


def schedule(sch, epi: Epilogue, stages: list, outs: list, at, depth: int, lanes: int, movmsk: bool = False,
             channels_last: bool = False) -> None:
    """Place the epilogue blocks (stages, then outputs) under loop ``at`` (nest depth ``depth``)
    of the accumulator tile, unrolled, with the lane loops vectorized or tensorized.

    Unrolled, each output reads the tile's accumulators straight from registers; as a loop it
    reloads them from the spilled tile, and 256-bit reloads of 512-bit stores defeat store
    forwarding (measured: ~35 cycles per 16 outputs instead of ~15).
    """
    from .intrin import lanes_to_bits_intrin

    threshold = isinstance(epi, Threshold)
    for t in stages + outs:  # every block moves before any is tensorized (the move needs plain blocks)
        blk = sch.get_sblock(t.op.name)
        sch.reverse_compute_at(blk, at)
        if t in stages:
            sch.set_scope(blk, 0, "local")
    for t in stages + outs:
        blk = sch.get_sblock(t.op.name)
        loops = sch.get_loops(blk)[depth:]
        if threshold and t is stages[1]:  # the bit field of one lane tile: one comparison mask
            sch.decompose_reduction(blk, loops[-1])
            sch.tensorize(loops[-1], lanes_to_bits_intrin(lanes, movmsk and lanes % 8 == 0))
            loops = loops[:-1]
        elif threshold and t is stages[0]:
            sch.vectorize(loops[-1])
            loops = loops[:-1]
        elif isinstance(epi, Raw) and len(t.shape) > 2 and not channels_last:
            loops = loops[-1:]  # channels-first tile: unroll the pixels of one channel row only
        elif not threshold and int(t.shape[-1]) % lanes == 0:
            outer, inner = sch.split(loops[-1], [None, lanes])
            sch.vectorize(inner)
            loops = loops[:-1] + [outer]
        for lp in loops:
            sch.unroll(lp)
