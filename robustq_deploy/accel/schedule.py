"""How each offloaded layer uses the accelerator's arrays and buffers: the one schedule that the
C code generator (:mod:`.codegen`) emits and the cost model (:mod:`.cost`) charges.

Per layer (``R x Cols`` array, :class:`.layer.OffloadLayer` geometry):

* the reduction ``K = C*KH*KW`` is padded to a multiple of the array's columns (``k_pad``; XNOR:
  bits, in 32-bit words) and the output channels to a multiple of its rows (``m_pad``); padding
  lanes multiply zeros, which is where utilisation below 100% comes from;
* **weights**: resident on chip when they fit in what the other resident layers leave (loaded
  once, before the first image), otherwise streamed from DRAM in tiles of ``ch_tile`` output
  channels (a multiple of ``R``) through the free part of the weight buffer, every image; the
  output channels are computed tile by tile (``n_wtiles``) either way;
* **activations**: the input map (zero-padded) and the output rows of the current channel tile
  (before pooling) live in the activation buffer; when they do not fit, the layer is tiled by
  output rows (``rows_tile``, a multiple of the pool size), each tile loading its input rows
  with the halo; when both weights and rows are tiled, each weight tile re-reads the input;
* activations are bytes on and off chip (binary ones too: the host exchanges int8 +-1),
  weights are packed at their format's bits (:data:`.desc.FORMAT_BITS`; XNOR: 1 bit); per
  channel parameters (bias, m0, shift or thresholds) stay on chip.

:func:`fit_problems` says whether a layer can run at all (one array row of weights and one
output row must fit); :func:`plan` places all offloaded layers of a model: weights resident in
order of increasing size while every streamed layer keeps room for one tile.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dtypes import dtype
from ..errors import UnsupportedError
from .desc import WORD_BITS, AccelDesc
from .layer import Datapath, OffloadLayer, datapath



def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Schedule:
    layer: str
    engine: str  # "mac" / "xnor"
    weight_format: str
    act_format: str
    rows: int  # array rows used (output channels in parallel)
    cols: int  # array columns (MAC lanes or XNOR bits per row)
    k_pad: int  # reduction length padded to the columns (elements; XNOR: bits)
    m_pad: int  # output channels padded to the rows
    weight_bits: int
    weight_bytes: int  # the whole layer, packed
    param_bytes: int
    resident: bool
    ch_tile: int  # output channels per weight tile (m_pad when resident)
    n_wtiles: int
    rows_tile: int  # convolution output rows per activation tile
    n_rtiles: int
    in_rows_tile: int  # padded input rows held per tile
    padded_w: int  # input row length with the left/right zero padding

    @property
    def k_words(self) -> int:
        return self.k_pad // WORD_BITS

    @property
    def lanes(self) -> int:
        return self.rows * self.cols

    def tile_weight_bytes(self, channels: int | None = None) -> int:
        return _ceil((self.ch_tile if channels is None else channels) * self.k_pad * self.weight_bits, 8)


def _array(dp: Datapath, desc: AccelDesc):
    return desc.xnor_array if dp.engine == "xnor" else desc.mac_array


def _param_bytes(spec: OffloadLayer, m_pad: int) -> int:
    per = 4 if spec.bias is not None else 0
    per += {"requant": 5, "sign": 8 if spec.th_hi is not None else 4, "none": 0}[spec.epilogue]
    return per * m_pad


def _in_rows(spec: OffloadLayer, rows: int) -> int:
    return min((rows - 1) * spec.stride[0] + spec.kh, spec.h + spec.pads[0] + spec.pads[2])


def act_tile_bytes(spec: OffloadLayer, rows: int, channels: int) -> tuple[int, int]:
    """On-chip (input tile, output tile) bytes for ``rows`` output rows of ``channels`` channels."""
    padded_w = spec.w + spec.pads[1] + spec.pads[3]
    return spec.c * _in_rows(spec, rows) * padded_w, channels * rows * spec.conv_cols * dtype(spec.out_dtype).storage_bytes


def _rows_tile(spec: OffloadLayer, channels: int, budget: int) -> int | None:
    """Most output rows (a multiple of the pool size) whose tiles fit ``budget`` bytes."""
    best = None
    for rows in range(spec.pool, spec.conv_rows + 1, spec.pool):
        if sum(act_tile_bytes(spec, rows, channels)) > budget:
            break
        best = rows
    return best


def _shape(spec: OffloadLayer, desc: AccelDesc, dp: Datapath) -> tuple[int, int, int, int]:
    arr = _array(dp, desc)
    return arr.rows, arr.cols, _ceil(spec.k, arr.cols) * arr.cols, _ceil(spec.m, arr.rows) * arr.rows


def fit_problems(spec: OffloadLayer, desc: AccelDesc) -> list[str]:
    """Why ``spec`` cannot run on ``desc`` even fully tiled (empty: it can)."""
    dp, _ = datapath(spec, desc)
    if dp is None:
        return []  # layer.problems says why
    rows, cols, k_pad, m_pad = _shape(spec, desc, dp)
    out = []
    one_row, params = _ceil(rows * k_pad * dp.weight_bits, 8), _param_bytes(spec, m_pad)
    if one_row + params > desc.weight_buffer_bytes:
        out.append(f"one weight tile of {rows} channels ({one_row} B, plus {params} B of channel parameters) "
                   f"exceeds the weight buffer ({desc.weight_buffer_bytes} B)")
    need = sum(act_tile_bytes(spec, spec.pool, rows))
    if need > desc.act_buffer_bytes:
        out.append(f"one output row tile ({need} B of activations) exceeds the activation buffer "
                   f"({desc.act_buffer_bytes} B)")
    return out


def _tiles(spec: OffloadLayer, desc: AccelDesc, dp: Datapath, resident: bool, free: int) -> Schedule:
    rows, cols, k_pad, m_pad = _shape(spec, desc, dp)
    bits = dp.weight_bits
    per_ch = k_pad * bits
    ch_tile = m_pad if resident else min(m_pad, max(rows, (free * 8 // per_ch) // rows * rows))
    rows_tile = None
    while rows_tile is None:
        rows_tile = _rows_tile(spec, ch_tile, desc.act_buffer_bytes)
        if rows_tile is None:  # shrink the channel tile until an output row tile fits
            if ch_tile == rows:
                raise ValueError(f"{spec.name}: no tiling fits (fit_problems should have refused it)")
            ch_tile -= rows
    n_wtiles = _ceil(m_pad, ch_tile)
    return Schedule(layer=spec.name, engine=dp.engine, weight_format=dp.weight_format, act_format=dp.act_format,
                    rows=rows, cols=cols, k_pad=k_pad, m_pad=m_pad, weight_bits=bits,
                    weight_bytes=_ceil(m_pad * per_ch, 8), param_bytes=_param_bytes(spec, m_pad),
                    resident=resident, ch_tile=ch_tile, n_wtiles=n_wtiles, rows_tile=rows_tile,
                    n_rtiles=_ceil(spec.conv_rows, rows_tile), in_rows_tile=_in_rows(spec, rows_tile),
                    padded_w=spec.w + spec.pads[1] + spec.pads[3])


def plan(specs: list[OffloadLayer], desc: AccelDesc) -> list[Schedule]:
    """Schedules of the offloaded layers of one model (every spec must pass :func:`fit_problems`)."""
    dps = []
    for s in specs:
        dp, why = datapath(s, desc)
        if dp is None:
            raise ValueError(f"{s.name}: {'; '.join(why)}")
        dps.append(dp)
    full = [_ceil(_shape(s, desc, dp)[3] * _shape(s, desc, dp)[2] * dp.weight_bits, 8) for s, dp in zip(specs, dps)]
    params = sum(_param_bytes(s, _shape(s, desc, dp)[3]) for s, dp in zip(specs, dps))
    minimum = [_ceil(_shape(s, desc, dp)[0] * _shape(s, desc, dp)[2] * dp.weight_bits, 8) for s, dp in zip(specs, dps)]
    budget = desc.weight_buffer_bytes - params
    order = sorted(range(len(specs)), key=lambda i: (full[i], i))
    for n_resident in range(len(order), -1, -1):
        resident = set(order[:n_resident])
        free = budget - sum(full[i] for i in resident)
        streamed = [i for i in range(len(specs)) if i not in resident]
        if free >= 0 and all(minimum[i] <= free for i in streamed):
            break
    else:
        raise UnsupportedError(f"accelerator {desc.name}: the weight buffer ({desc.weight_buffer_bytes} B) cannot hold "
                               f"the per-channel parameters ({params} B) and one weight tile of every offloaded layer")
    return [_tiles(s, desc, dp, i in resident, free) for i, (s, dp) in enumerate(zip(specs, dps))]


__all__ = ["Schedule", "act_tile_bytes", "fit_problems", "plan"]
