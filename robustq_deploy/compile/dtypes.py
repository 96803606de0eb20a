"""ONNX element types as the compiler sees them: integer grids, storage dtypes, refusals.

The types themselves are the project's one table (:mod:`robustq_deploy.dtypes`). Compiled
modules carry every integer tensor in its byte-addressable *storage* dtype: int4/uint4 values
live unpacked in int8/uint8 (one value per byte; TVM cannot copy packed sub-byte tensors),
every other integer type is stored as itself. A row keeps the *logical* grid (``qmin..qmax``)
next to the storage dtype, so converters saturate to the logical range. The runtime converts
sub-byte arrays to and from storage at the module boundary (:func:`to_storage`,
:func:`from_storage`).

Types a target cannot run as integer code (float8, float4, 2-bit) are listed in
:data:`REFUSED` with the reason the pre-conversion scan reports. To support a new integer type,
add its row to :data:`QTYPES` (and drop it from :data:`REFUSED`).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..dtypes import DType, dtype, from_storage, numpy_dtype, to_storage

# The integer types compiled code computes with (ONNX element type -> row).
QTYPES: dict[int, DType] = {d.onnx: d for d in map(dtype, ("int8", "uint8", "int16", "uint16", "int4", "uint4",
                                                          "int32"))}

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


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


def qtype(elem_type: int) -> DType:
    """The integer grid of an ONNX element type (KeyError for non-integer types)."""
    return QTYPES[elem_type]


def storage_dtype(elem_type: int) -> str:
    """The dtype a compiled module uses for tensors of this ONNX element type."""
    if elem_type in QTYPES:
        return QTYPES[elem_type].storage
    return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))


__all__ = ["QTYPES", "QUANT_TYPES", "REFUSED", "from_storage", "numpy_dtype", "qtype", "storage_dtype",
           "to_storage", "type_name"]
