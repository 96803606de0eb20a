"""Values of a graph twin: exact forward values with differentiable surrogates.

Every value of the graph is a :class:`Val`: ``t`` is a torch tensor whose *forward* value is the
value the numpy reference (:mod:`robustq_deploy.export.reference`) computes, bit for bit, and
whose *gradient* is that of a smooth surrogate of the op. Float tensors (ONNX FLOAT) are float32;
integer and boolean tensors are held in float64 (exact below 2**53) together with an ``exact``
int64 copy, from which integer ops compute their results (int64 arithmetic, wrapped to the
tensor's own width, as C and numpy do), so values beyond 2**53 stay exact too.

:func:`ste` joins an exact result and a surrogate: forward ``exact``, backward the surrogate's
gradient (``exact + s - s.detach()``; the added term is exactly 0 in the forward pass). Rounding
gets the identity gradient of its input (straight-through), saturation the gradient of a clamp
(zero outside the range): callers clamp the surrogate to the same range before calling it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from onnx import TensorProto

from ..dtypes import DTYPES
from ..export.reference.session import INT_RANGES, NP_TYPES

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
BOOL = TensorProto.BOOL
INT64 = TensorProto.INT64
# integer types held as int64 here and wrapped to their width (from the project's dtype table)
_WIDTH = {d.onnx: d.bits for d in DTYPES.values() if d.integer and d.bits <= 32}
_SIGNED = {d.onnx for d in DTYPES.values() if d.signed and d.bits <= 32}


@dataclass
class Val:
    t: torch.Tensor  # forward value of the reference; gradient of the surrogate
    type: int  # ONNX element type
    exact: torch.Tensor | None = None  # int64 copy of integer and boolean values

    @property
    def is_int(self) -> bool:
        return self.exact is not None

    @property
    def shape(self) -> torch.Size:
        return self.t.shape


def is_float(elem_type: int) -> bool:
    return elem_type in FLOAT_TYPES


def wrap(x: torch.Tensor, elem_type: int) -> torch.Tensor:
    """Two's complement wrap of int64 ``x`` to the width of ``elem_type`` (a cast in C / numpy)."""
    if elem_type == BOOL:
        return (x != 0).to(torch.int64)
    bits = _WIDTH.get(elem_type)
    if bits is None:
        return x
    mod = 1 << bits
    if elem_type in _SIGNED:
        return torch.remainder(x + (mod >> 1), mod) - (mod >> 1)
    return torch.remainder(x, mod)


def ste(exact: torch.Tensor, surrogate: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``exact`` (as ``dtype``) in the forward pass, the gradient of ``surrogate`` backward."""
    base = exact.to(dtype)
    if surrogate is None or not surrogate.requires_grad:
        return base
    s = surrogate.to(dtype)
    return base + (s - s.detach())


class _ClampedLinearSTE(torch.autograd.Function):
    """Forward: the exact value. Backward: the gradient of ``clamp(x * scale + offset, lo, hi)``
    (``scale`` where the unclamped value lies inside ``[lo, hi]``, else 0), in one autograd node."""

    @staticmethod
    def forward(ctx, exact, x, scale, offset, lo, hi):
        v = x.detach() * scale + offset
        ctx.save_for_backward(((v >= lo) & (v <= hi)).to(x.dtype) * scale)
        return exact

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return None, grad.to(g.dtype) * g, None, None, None, None


def quant_val(exact: torch.Tensor, elem_type: int, x: torch.Tensor, scale, offset, lo: float, hi: float) -> Val:
    """An integer value ``exact`` (already inside ``elem_type``'s range) that rounds and saturates
    ``x * scale + offset`` to ``[lo, hi]``: straight-through inside the range, zero gradient outside."""
    e = exact.to(torch.int64)
    base = e.to(torch.float64)
    if not x.requires_grad:
        return Val(base, elem_type, e)
    s = torch.as_tensor(scale, dtype=torch.float64)
    o = torch.as_tensor(offset, dtype=torch.float64)
    return Val(_ClampedLinearSTE.apply(base, x.to(torch.float64), s, o, float(lo), float(hi)), elem_type, e)


def int_val(exact: torch.Tensor, elem_type: int, surrogate: torch.Tensor | None = None,
            in_range: bool = False) -> Val:
    """An integer (or boolean) value from exact int64 results, wrapped to ``elem_type`` (callers
    whose results are already inside the type's range, after a clamp, pass ``in_range``)."""
    e = exact.to(torch.int64)
    if not in_range:
        e = wrap(e, elem_type)
    return Val(ste(e, surrogate, torch.float64), elem_type, e)


def float_val(t: torch.Tensor, elem_type: int = TensorProto.FLOAT) -> Val:
    return Val(t.to(torch.float64 if elem_type == TensorProto.DOUBLE else torch.float32), elem_type)


def const_val(a: np.ndarray, elem_type: int) -> Val:
    """A constant (initializer, attribute) as a value without gradient."""
    a = np.asarray(a)
    if is_float(elem_type):
        return float_val(torch.from_numpy(np.array(a, np.float32 if elem_type != TensorProto.DOUBLE else np.float64)),
                         elem_type)
    e = torch.from_numpy(np.array(a).astype(np.int64))
    return int_val(e, elem_type)


def exact_of(v: Val) -> torch.Tensor:
    """The exact value: int64 for integers and booleans, the float tensor otherwise."""
    return v.exact if v.exact is not None else v.t


def int_range(elem_type: int) -> tuple[int, int]:
    return INT_RANGES[elem_type]


def numpy_type(elem_type: int):
    return NP_TYPES[elem_type]


__all__ = ["BOOL", "FLOAT_TYPES", "INT64", "Val", "const_val", "exact_of", "float_val", "int_range", "int_val",
           "is_float", "numpy_type", "quant_val", "ste", "wrap"]
