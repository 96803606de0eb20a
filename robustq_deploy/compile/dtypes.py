"""ONNX element types as the compiler sees them: integer grids, storage dtypes, refusals.

Compiled modules carry every integer tensor in a byte-addressable *storage* dtype: int4/uint4
values live unpacked in int8/uint8 (one value per byte; TVM cannot copy packed sub-byte
tensors), every other integer type is stored as itself. :class:`QType` keeps the *logical*
grid (``qmin..qmax``) next to the storage dtype, so converters saturate to the logical range.
The runtime converts sub-byte arrays to and from storage at the module boundary
(:func:`to_storage`, :func:`from_storage`).

Types a target cannot run as integer code (float8, float4, 2-bit) are listed in
:data:`REFUSED` with the reason the pre-conversion scan reports. To support a new integer type,
add a :class:`QType` to :data:`QTYPES` (and drop it from :data:`REFUSED`).
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper


@dataclass(frozen=True)
class QType:
    """An integer grid: ONNX element type, name, storage dtype and saturation range."""

    onnx: int
    name: str
    storage: str
    qmin: int
    qmax: int

    @property
    def signed(self) -> bool:
        return self.qmin < 0


def _qtype(onnx_type: int, name: str, storage: str, bits: int, signed: bool) -> QType:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return QType(onnx_type, name, storage, lo, hi)


QTYPES: dict[int, QType] = {q.onnx: q for q in (
    _qtype(TensorProto.INT8, "int8", "int8", 8, True),
    _qtype(TensorProto.UINT8, "uint8", "uint8", 8, False),
    _qtype(TensorProto.INT16, "int16", "int16", 16, True),
    _qtype(TensorProto.UINT16, "uint16", "uint16", 16, False),
    _qtype(TensorProto.INT4, "int4", "int8", 4, True),
    _qtype(TensorProto.UINT4, "uint4", "uint8", 4, False),
    _qtype(TensorProto.INT32, "int32", "int32", 32, True),
)}

_F8 = "float8 types are not integer code; no target here computes in float8"
REFUSED: dict[int, str] = {
    TensorProto.FLOAT8E4M3FN: _F8, TensorProto.FLOAT8E4M3FNUZ: _F8,
    TensorProto.FLOAT8E5M2: _F8, TensorProto.FLOAT8E5M2FNUZ: _F8,
    TensorProto.FLOAT4E2M1: "float4 types are not integer code; no target here computes in float4",
    TensorProto.INT2: "2-bit integers are not supported by the targets (smallest grid: 4 bits)",
    TensorProto.UINT2: "2-bit integers are not supported by the targets (smallest grid: 4 bits)",
}
for _name in ("FLOAT8E8M0", "FLOAT6E2M3", "FLOAT6E3M2"):  # newer ONNX releases only
    if hasattr(TensorProto, _name):
        REFUSED[getattr(TensorProto, _name)] = "micro-float types are not integer code"

# Activation/weight quantization types the standard ops accept (int32 only appears as bias).
QUANT_TYPES = tuple(t for t in QTYPES if t != TensorProto.INT32)
SUB_BYTE = {"int4": "int8", "uint4": "uint8"}


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


def qtype(elem_type: int) -> QType:
    """The integer grid of an ONNX element type (KeyError for non-integer types)."""
    return QTYPES[elem_type]


def storage_dtype(elem_type: int) -> str:
    """The dtype a compiled module uses for tensors of this ONNX element type."""
    if elem_type in QTYPES:
        return QTYPES[elem_type].storage
    return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype of a signature dtype name (``int4``/``uint4`` through ml_dtypes)."""
    if name in SUB_BYTE:
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def to_storage(a: np.ndarray) -> np.ndarray:
    """Sub-byte arrays unpacked to their storage dtype; other arrays unchanged."""
    return a.astype(SUB_BYTE[a.dtype.name]) if a.dtype.name in SUB_BYTE else a


def from_storage(a: np.ndarray, name: str) -> np.ndarray:
    """A module output in storage form back to its signature dtype ``name``."""
    return a.astype(numpy_dtype(name)) if name in SUB_BYTE else a
