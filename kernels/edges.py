"""The small kernels at a network's edges and joints: input quantization and global average
pooling.

* :class:`QuantizeInput`: float32 NCHW pixels -> stored levels,
  ``q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`` exactly as ONNX
  QuantizeLinear computes it (float32 division, ties to even; saturation happens in float, so any
  finite input, however large, lands on ``qmin`` or ``qmax`` as in onnxruntime). The output is NHWC (channels
  padded to a multiple of 4), or, for a first convolution with few input channels, the
  zero-padded "rows" layout that convolution reads directly (:class:`robustq_deploy.kernels.int8_conv2d.Conv2d`
  ``rows``): each pixel is quantized once and no unfolded copy is made.
* :class:`GlobalAvgPool`: ``sum`` over all pixels in int32, then requantization; the
  ``1/(H*W)`` of the mean is folded into the multiplier (:mod:`robustq_deploy.kernels.epilogue`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import epilogue as E
from .schedule import batch_var
from . import layout as L


@dataclass(frozen=True)
class QuantizeInput:
    channels: int
    height: int
    width: int
    scale: float  # float32 value
    zero_point: int
    qmin: int
    qmax: int
    storage: L.Storage
    rows: tuple[int, int] | None = None  # (pad, row_len) of the "rows" layout; None: NHWC

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Stored per-image shape."""
        if self.rows is None:
            return self.height, self.width, L.round_up(self.channels, 4)
        pad, row_len = self.rows
        return self.height + 2 * pad, row_len


def build_quantize(spec: QuantizeInput, batch=None, parallel: bool = True):
    from tvm import te, tirx
    from tvm.s_tir import Schedule

    n_ = batch if batch is not None else batch_var()
    C, H, W = spec.channels, spec.height, spec.width
    X = te.placeholder((n_, C, H, W), "float32", name="X")
    scale = tirx.const(np.float32(spec.scale), "float32")
    zero = tirx.const(spec.zero_point + spec.storage.offset, spec.storage.dtype)

    lo = tirx.const(float(spec.qmin - spec.zero_point), "float32")
    hi = tirx.const(float(spec.qmax - spec.zero_point), "float32")

    def q(v):  # saturate in float before the conversion: 1e30 / scale does not fit an int32
        r = tirx.max(tirx.min(tirx.nearbyint(v / scale), hi), lo).astype("int32") + spec.zero_point
        return (r + spec.storage.offset).astype(spec.storage.dtype)

    if spec.rows is None:
        cs = spec.out_shape[-1]
        out = te.compute((n_, H, W, cs), lambda n, y, x, c: tirx.if_then_else(
            c < C, q(X[n, tirx.min(c, C - 1), y, x]), zero), name="out")
    else:
        p, row_len = spec.rows

        def at(n, y, j):
            x, c = j // C - p, j % C
            inside = tirx.all(y >= p, y < H + p, x >= 0, x < W)
            return tirx.if_then_else(inside, q(X[n, c, tirx.max(tirx.min(y - p, H - 1), 0),
                                                 tirx.max(tirx.min(x, W - 1), 0)]), zero)
        out = te.compute((n_, H + 2 * p, row_len), at, name="out")
    sch = Schedule(te.create_prim_func([X, out]))
    loops = sch.get_loops(sch.get_sblock("out"))
    rows = sch.fuse(loops[0], loops[1])
    if parallel:
        sch.parallel(rows)
    if spec.rows is not None and spec.rows[1] % C == 0:
        sch.split(loops[2], [None, C])  # j = x * C + c: no division in the index math
    return sch.mod["main"].with_attr("global_symbol", "main")


def quantize_reference(spec: QuantizeInput, x: np.ndarray) -> np.ndarray:
    """Logical levels NCHW (int64) of the float input."""
    v = np.rint(x.astype(np.float32) / np.float32(spec.scale))
    return np.clip(v, spec.qmin - spec.zero_point, spec.qmax - spec.zero_point).astype(np.int64) + spec.zero_point


@dataclass(frozen=True)
class GlobalAvgPool:
    height: int
    width: int
    channels: int  # stored channels of input and output
    input: L.Storage
    epilogue: E.Requant


def build_avgpool(spec: GlobalAvgPool, batch=None, parallel: bool = True):
    from tvm import te, tirx
    from tvm.s_tir import Schedule

    n_ = batch if batch is not None else batch_var()
    C = spec.channels
    X = te.placeholder((n_, spec.height, spec.width, C), spec.input.dtype, name="X")
    ry, rx = te.reduce_axis((0, spec.height), "ry"), te.reduce_axis((0, spec.width), "rx")
    acc = te.compute((n_, C), lambda n, c: te.sum(X[n, ry, rx, c].astype("int32") - spec.input.offset, axis=[ry, rx]),
                     name="acc")
    params, outs, _ = E.build(spec.epilogue, lambda n, ob, ol: acc[n, ob * C + ol], (n_,), C, C, C)
    sch = Schedule(te.create_prim_func([X] + params + outs))
    blk = sch.get_sblock("acc")
    n, c, ry_, rx_ = sch.get_loops(blk)
    if parallel:
        sch.parallel(n)
    sch.reorder(n, ry_, rx_, c)
    sch.set_scope(blk, 0, "local")
    for o in outs:
        ob = sch.get_sblock(o.op.name)
        sch.reverse_compute_at(ob, n)
    return sch.mod["main"].with_attr("global_symbol", "main")


def pack_avgpool(spec: GlobalAvgPool, epi_params: dict) -> list[np.ndarray]:
    return E.pack(spec.epilogue, epi_params, np.zeros(spec.channels, np.int64), spec.channels)


def avgpool_reference(spec: GlobalAvgPool, x_levels: np.ndarray, epi_params: dict) -> list[np.ndarray]:
    acc = x_levels.astype(np.int64).sum(axis=(2, 3))
    return E.reference(spec.epilogue, acc, epi_params, axis=1)
