"""The one table of the element types the project handles: names, ONNX types, numpy arrays,
integer ranges, byte storage.

Every stage speaks of tensors by these names (``"uint8"``, ``"int4"``, ``"float32"``): the
exporters write their ONNX element types, the reference interpreter holds them in their numpy
arrays, the compiler and the runtime move sub-byte values in their byte storage (int4/uint4 live
unpacked in int8/uint8, one value per byte: TVM cannot copy packed sub-byte tensors), the
accelerator's C code uses their widths. :data:`DTYPES` is the table; the helpers read it. To add
a type, add a row.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto


@dataclass(frozen=True)
class DType:
    """One element type: its name, ONNX element type, the numpy dtype of arrays that hold it
    (``storage``: int4 held widened in int8), bits, and for integers the saturation range."""

    name: str
    onnx: int
    storage: str  # numpy dtype of the array holding a value (what a compiled module passes)
    bits: int
    qmin: int | None = None  # None: not an integer type
    qmax: int | None = None

    @property
    def integer(self) -> bool:
        return self.qmin is not None

    @property
    def signed(self) -> bool:
        return self.qmin is not None and self.qmin < 0

    @property
    def sub_byte(self) -> bool:
        return self.bits < 8

    @property
    def storage_bytes(self) -> int:
        return np.dtype(self.storage).itemsize

    @property
    def ort(self) -> str:
        """onnxruntime's name of the type (``tensor(uint8)``)."""
        return f"tensor({'float' if self.name == 'float32' else 'double' if self.name == 'float64' else self.name})"


def _int(name: str, onnx: int, storage: str, bits: int, signed: bool) -> DType:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return DType(name, onnx, storage, bits, lo, hi)


DTYPES: dict[str, DType] = {d.name: d for d in (
    _int("int4", TensorProto.INT4, "int8", 4, True),
    _int("uint4", TensorProto.UINT4, "uint8", 4, False),
    _int("int8", TensorProto.INT8, "int8", 8, True),
    _int("uint8", TensorProto.UINT8, "uint8", 8, False),
    _int("int16", TensorProto.INT16, "int16", 16, True),
    _int("uint16", TensorProto.UINT16, "uint16", 16, False),
    _int("int32", TensorProto.INT32, "int32", 32, True),
    _int("uint32", TensorProto.UINT32, "uint32", 32, False),
    _int("int64", TensorProto.INT64, "int64", 64, True),
    _int("uint64", TensorProto.UINT64, "uint64", 64, False),
    DType("bool", TensorProto.BOOL, "bool", 8),
    DType("float16", TensorProto.FLOAT16, "float16", 16),
    DType("float32", TensorProto.FLOAT, "float32", 32),
    DType("float64", TensorProto.DOUBLE, "float64", 64),
)}
BY_ONNX: dict[int, DType] = {d.onnx: d for d in DTYPES.values()}


def dtype(name: str) -> DType:
    """The row of ``name`` (KeyError for a type the project does not handle)."""
    return DTYPES[name]


def of_onnx(elem_type: int) -> DType:
    """The row of an ONNX element type (KeyError for a type the project does not handle)."""
    return BY_ONNX[elem_type]


def int_range(name: str) -> tuple[int, int]:
    """``(qmin, qmax)`` of an integer type name."""
    d = DTYPES[name]
    if d.qmin is None:
        raise KeyError(f"{name} is not an integer type")
    return d.qmin, d.qmax


def numpy_dtype(name: str) -> np.dtype:
    """numpy dtype of a signature dtype name (``int4``/``uint4`` through ml_dtypes)."""
    d = DTYPES.get(name)
    if d is not None and d.sub_byte:
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def to_storage(a: np.ndarray) -> np.ndarray:
    """Sub-byte arrays (ml_dtypes int4/uint4) widened to their storage dtype; others unchanged."""
    d = DTYPES.get(a.dtype.name)
    return a.astype(d.storage) if d is not None and d.sub_byte else a


def from_storage(a: np.ndarray, name: str) -> np.ndarray:
    """A module output in storage form back to its signature dtype ``name``."""
    d = DTYPES.get(name)
    return a.astype(numpy_dtype(name)) if d is not None and d.sub_byte else a


__all__ = ["BY_ONNX", "DTYPES", "DType", "dtype", "from_storage", "int_range", "numpy_dtype", "of_onnx",
           "to_storage"]
