"""Fused int8 dense layer (ONNX Gemm with transB=1 / MatMul): uint8/int8 rows x int8 weights,
int32 accumulation, fused epilogue (requantization + ReLU, threshold, or dequantization).

Compute (TE, weights packed ``[OC/L, K/4, L, 4]``)::

    acc[n, oc] = sum_k X[n, k] * W[oc, k]        out = epilogue(acc + bias)

Schedule: one parallel task per (row, block of output channels), so batch 1 splits the output
channels over the cores and batch 64 splits rows; inside a task, ``oc_blocks`` lane tiles of
accumulators stay in registers over the whole reduction, one broadcast input group feeding
``oc_blocks`` dot-product instructions (``vpdpbusd`` / ``sdot``). Rows are not tiled: the batch is
symbolic (one build serves every batch size) and a row tile would compute padding rows at batch 1.

A flattened NHWC activation is a dense input as it is: the network packs the weight's columns
in NHWC order (:func:`robustq_deploy.kernels.layout.dense_weight_from_nchw`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import epilogue as E
from . import layout as L
from . import reference as R
from .schedule import Lowering, Tile, batch_var, divisors, dot_tile

MAX_OC_BLOCKS = 8


@dataclass(frozen=True)
class Dense:
    in_features: int  # stored features (multiple of 4); real features with a ``source``
    out_channels: int
    input: L.Storage
    epilogue: E.Epilogue
    source: str | None = None  # "uint8"/"int8": logical [N, K] input, staged per task by the kernel
    pad_value: int = 0  # stored zero point, for the staged padding features

    def __post_init__(self):
        if self.in_features % 4 and not self.source:
            raise ValueError("stored input features must be a multiple of 4")
        if getattr(self.epilogue, "residual", None) is not None:
            raise ValueError("dense kernels take no residual input")

    @property
    def macs_per_image(self) -> int:
        return self.in_features * self.out_channels


def compute(spec: Dense, low: Lowering, batch=None):
    from tvm import te, tirx

    n_ = batch if batch is not None else batch_var()
    lanes, K = low.lanes, L.round_up(spec.in_features, 4)
    acc_ch = E.acc_channels(spec.epilogue, spec.out_channels, lanes)
    if spec.source:
        # a compile path's logical rows: staged with the storage offset, padded to 4-byte groups
        X = te.placeholder((n_, spec.in_features), spec.source, name="X")
        real, dt, off = spec.in_features, spec.input.dtype, spec.input.offset
        Xs = te.compute((n_, K), lambda n, k: tirx.if_then_else(
            k < real, (X[n, tirx.min(k, real - 1)].astype("int32") + off).astype(dt), tirx.const(spec.pad_value, dt)),
            name="stage")
    else:
        X = Xs = te.placeholder((n_, K), spec.input.dtype, name="X")
    Wt = te.placeholder((acc_ch // lanes, K // 4, lanes, 4), "int8", name="W")
    kb = te.reduce_axis((0, K // 4), "kb")
    ki = te.reduce_axis((0, 4), "ki")
    acc = te.compute(
        (n_, acc_ch // lanes, lanes),
        lambda n, ob, ol: te.sum(Xs[n, kb * 4 + ki].astype("int32") * Wt[ob, kb, ol, ki].astype("int32"), axis=[kb, ki]),
        name="acc")
    params, outs, stages = E.build(spec.epilogue, lambda n, ob, ol: acc[n, ob, ol], (n_,), spec.out_channels, acc_ch, lanes)
    return [X, Wt] + params, outs, stages


def choose_tile(spec: Dense, low: Lowering) -> Tile:
    tiles = E.acc_channels(spec.epilogue, spec.out_channels, low.lanes) // low.lanes
    multiple = max(1, 32 // low.lanes) if isinstance(spec.epilogue, E.Threshold) else 1
    ok = [d for d in divisors(tiles) if d % multiple == 0 and d <= max(MAX_OC_BLOCKS, multiple)]
    return Tile(1, max(ok))


def build(spec: Dense, low: Lowering, tile: Tile | None = None, batch=None, parallel: bool = True):
    """The scheduled TIR PrimFunc ``(X, W, epilogue params..., outputs...)``."""
    from tvm import te
    from tvm.s_tir import Schedule

    inputs, outs, stages = compute(spec, low, batch)
    tile = tile or choose_tile(spec, low)
    if tile.pixels != 1:
        raise ValueError("dense kernels do not tile rows (the batch is symbolic)")
    sch = Schedule(te.create_prim_func(inputs + outs))
    acc = sch.get_sblock("acc")
    n, ob, ol, kb, ki = sch.get_loops(acc)
    obo, obi = sch.split(ob, [None, tile.oc_blocks])
    sch.reorder(n, obo, kb, obi, ol, ki)
    task = sch.fuse(n, obo)
    if parallel:
        sch.parallel(task)
    sch.set_scope(acc, 0, "local")
    E.schedule(sch, spec.epilogue, stages, outs, task, 1, low.lanes, low.movmsk)
    if spec.source:
        stage = sch.get_sblock("stage")
        sch.compute_at(stage, task)  # global scope: the dot-product intrinsic reads global buffers
    dot_tile(sch, acc, low, [kb], [obi], ol, ki)
    return sch.mod["main"].with_attr("global_symbol", "main")


def pack(spec: Dense, low: Lowering, weight: np.ndarray, bias: np.ndarray | None, epi_params: dict,
         x_zero_point: int = 0) -> list[np.ndarray]:
    """Constant operands (W, epilogue arrays) from a logical [OC, K] weight whose columns are
    already in the stored feature order (padded features get zero weights)."""
    acc_ch = E.acc_channels(spec.epilogue, spec.out_channels, low.lanes)
    oc, k = weight.shape
    kp = L.round_up(spec.in_features, 4)
    w4 = np.zeros((oc, kp, 1, 1), np.int8)
    w4[:, :k, 0, 0] = weight
    packed = L.pack_conv_weight(w4, low.lanes, kp, acc_ch)[:, 0, 0]
    b = L.fold_bias(bias, weight, x_zero_point + spec.input.offset, acc_ch)
    return [np.ascontiguousarray(packed)] + E.pack(spec.epilogue, epi_params, b, acc_ch)


def reference(spec: Dense, x_levels: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
              epi_params: dict, x_zero_point: int = 0) -> list[np.ndarray]:
    acc = R.dense_acc(x_levels, weight, bias, x_zero_point)
    return E.reference(spec.epilogue, acc, epi_params, axis=1)
