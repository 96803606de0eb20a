"""Storage layouts between kernels, and the compile-time packing of constant operands.

Activations travel between kernels as NHWC tensors whose channel count is padded (to the
dot-product lane count, so every channel tile is full) and whose values are *stored* with an
offset: ``stored = level + offset``. The offset lets one instruction serve every signedness:
``vpdpbusd`` multiplies unsigned activations, so signed int8 levels are stored as ``level + 128``
in uint8; ``sdot`` multiplies signed ones, so uint8 levels are stored as ``level - 128`` in int8.
The consumer undoes the offset exactly by folding ``-(zero_point + offset) * sum(w)`` into its
int32 bias (:func:`fold_bias`), and pads with the stored form of the zero point, so padded taps
contribute nothing.

Binary activations are bit-packed along channels into uint32 words (:func:`robustq_deploy.kernels.reference.
pack_bits`: bit b of word j is channel 32j+b, set = +1), NHWC as well.

Weights are packed once, at compile time, into the blocked layout the inner loop streams
(:func:`pack_conv_weight`): ``[OC/L, KH, KW, C/4, L, 4]`` so one vector load feeds one
dot-product instruction. These helpers are numpy (compile time, tests); the kernels never
transform layouts at run time except at the network's input and output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reference import pack_bits


@dataclass(frozen=True)
class Storage:
    """How one activation tensor is stored: ``dtype`` and ``stored = level + offset``."""

    dtype: str  # "uint8", "int8" (integer levels) or "uint32" (packed bits)
    offset: int = 0

    def __post_init__(self):
        if self.dtype not in ("uint8", "int8", "uint32"):
            raise ValueError(f"unknown activation storage dtype {self.dtype!r}")
        if (self.dtype == "uint32" and self.offset) or abs(self.offset) > 128:
            raise ValueError(f"offset {self.offset} is not valid for {self.dtype} storage")


def round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def storage_for(signed: bool, act_dtype: str) -> Storage:
    """Storage of 8-bit levels (signed: -127..127, unsigned: 0..255) for an instruction that
    multiplies activations of ``act_dtype``."""
    if act_dtype == "uint8":
        return Storage("uint8", 128 if signed else 0)
    return Storage("int8", 0 if signed else -128)


def to_nhwc(x_nchw: np.ndarray, storage: Storage, channels: int, pad_level: int = 0) -> np.ndarray:
    """Logical NCHW levels -> stored NHWC with ``channels`` (padded with ``pad_level``)."""
    n, c, h, w = x_nchw.shape
    out = np.full((n, h, w, channels), pad_level + storage.offset, np.int64)
    out[..., :c] = np.moveaxis(x_nchw, 1, -1).astype(np.int64) + storage.offset
    info = np.iinfo(storage.dtype)
    if out.min() < info.min or out.max() > info.max:
        raise ValueError(f"levels do not fit {storage}")
    return out.astype(storage.dtype)


def from_nhwc(x: np.ndarray, storage: Storage, channels: int) -> np.ndarray:
    """Stored NHWC -> logical NCHW levels (int64) of the first ``channels`` channels."""
    return np.moveaxis(x[..., :channels].astype(np.int64) - storage.offset, -1, 1)


def bits_nhwc(x_pm1_nchw: np.ndarray) -> np.ndarray:
    """{-1, +1} NCHW -> packed uint32 NHWC words (channels padded with -1 bits)."""
    return pack_bits(np.moveaxis(x_pm1_nchw, 1, -1), axis=-1, word_bits=32)


def unbits_nhwc(words: np.ndarray, channels: int) -> np.ndarray:
    """Packed uint32 NHWC words -> {-1, +1} NCHW int8 of the first ``channels`` channels."""
    bits = (words[..., :, None] >> np.arange(32, dtype=np.uint32)) & 1
    bits = bits.reshape(words.shape[:-1] + (-1,))[..., :channels]
    return np.moveaxis(np.where(bits == 1, 1, -1).astype(np.int8), -1, 1)


def pack_conv_weight(w_oihw: np.ndarray, lanes: int, in_channels: int, out_channels: int | None = None) -> np.ndarray:
    """OIHW int8 -> ``[OCp/lanes, KH, KW, Cp/4, lanes, 4]`` (zero-padded to ``out_channels``
    and ``in_channels``, the stored channel counts)."""
    oc, c, kh, kw = w_oihw.shape
    ocp = round_up(out_channels or oc, lanes)
    if in_channels % 4 or in_channels < c:
        raise ValueError(f"stored input channels {in_channels} must be a multiple of 4 and >= {c}")
    full = np.zeros((ocp, in_channels, kh, kw), np.int8)
    full[:oc, :c] = w_oihw
    return np.ascontiguousarray(
        full.reshape(ocp // lanes, lanes, in_channels // 4, 4, kh, kw).transpose(0, 4, 5, 2, 1, 3))


def rows_weight(w_oihw: np.ndarray, groups: int) -> np.ndarray:
    """OIHW -> ``[O, 4 * groups, KH, 1]``: each kernel row's ``KW * C`` taps ordered (kw, c) as
    one "channel" axis, zero-padded to whole 4-byte groups, for a convolution reading the
    "rows" input layout (see robustq_deploy.kernels.int8_conv2d)."""
    oc, c, kh, kw = w_oihw.shape
    out = np.zeros((oc, 4 * groups, kh, 1), w_oihw.dtype)
    out[:, : kw * c, :, 0] = w_oihw.transpose(0, 3, 1, 2).reshape(oc, kw * c, kh)
    return out


def to_rows(x_nchw: np.ndarray, storage: Storage, pad: int, row_len: int, pad_level: int = 0) -> np.ndarray:
    """Logical NCHW levels -> the stored "rows" layout ``[N, H + 2p, row_len]`` (zero-padded)."""
    n, c, h, w = x_nchw.shape
    out = np.full((n, h + 2 * pad, row_len), pad_level + storage.offset, np.int64)
    body = np.moveaxis(x_nchw, 1, -1).astype(np.int64) + storage.offset  # N, H, W, C
    out[:, pad:pad + h, pad * c:(pad + w) * c] = body.reshape(n, h, w * c)
    return out.astype(storage.dtype)


def fold_bias(bias: np.ndarray | None, w_oihw: np.ndarray, stored_zero: int, out_channels: int) -> np.ndarray:
    """int32 bias with the input's stored zero (``zero_point + offset``) folded in, padded.

    The kernel computes ``sum(stored * w)``; the layer needs ``sum((level - zp) * w)`` =
    ``sum(stored * w) - (zp + offset) * sum(w)``.
    """
    oc = w_oihw.shape[0]
    b = np.zeros(out_channels, np.int64)
    if bias is not None:
        b[:oc] = bias
    b[:oc] -= stored_zero * w_oihw.reshape(oc, -1).astype(np.int64).sum(axis=1)
    if np.abs(b).max(initial=0) >= 2**31:
        raise OverflowError("folded bias does not fit int32")
    return b.astype(np.int32)


def pad_vector(v, n: int, fill=0, dtype=None) -> np.ndarray:
    """A per-channel vector padded with ``fill`` to length ``n``."""
    v = np.asarray(v)
    out = np.full(n, fill, dtype or v.dtype)
    out[: v.shape[0]] = v
    return out


def dense_weight_from_nchw(w: np.ndarray, channels: int, height: int, width: int, stored_channels: int) -> np.ndarray:
    """A dense weight over an NCHW-flattened input ([OC, C*H*W], ONNX Flatten order) -> the
    same weight over the stored NHWC-flattened input ([OC, H*W*stored_channels]), zero for
    padded channels, so the network flattens without a transpose."""
    oc = w.shape[0]
    out = np.zeros((oc, height, width, stored_channels), w.dtype)
    out[..., :channels] = w.reshape(oc, channels, height, width).transpose(0, 2, 3, 1)
    return out.reshape(oc, -1)
