"""The ``ai.robustq`` ONNX domain: bit-packed binary and ternary layers (specification).

Standard ONNX has no operator that reads weights packed 8 per byte, so the ``packed`` export
form writes binary and ternary conv / linear layers as four custom operators in the domain
``ai.robustq``, opset version 1. This docstring is their specification; the numpy reference
(:mod:`robustq_deploy.export.reference`), the standard-op definition written into every model
(:func:`function_proto`), the ONNX schema with shape inference (:func:`register_schemas`) and
the TVM lowering all follow it.

Common rules
------------
* Activations ``X`` are plain integers, ``int8`` or ``uint8``, with zero point 0: the value of an
  element is its integer value. Binary activations are ``int8`` in ``{-1, +1}``; nothing else
  is assumed about ``X``, so the same ops serve binary weights on 8-bit activations.
* The output ``Y`` is the exact ``int32`` accumulator ``sum(x * w)`` (no bias, no scale). Scales,
  bias, BatchNorm thresholds and requantization stay in standard integer ops after the op.
* Weights are constants (initializers). Each output channel ``m`` has ``K`` weights, flattened in
  C order of the ONNX weight layout: for a conv ``W[m, c, i, j]`` has index
  ``k = (c * kH + i) * kW + j`` (``K = C * kH * kW``); for a linear layer ``W[m, k]``.
* **Bit order**: weight ``k`` of channel ``m`` is bit ``k % 8`` (bit 0 = least significant) of
  byte ``k // 8`` of that channel's row. Each row has ``ceil(K / 8)`` bytes; unused trailing bits
  of the last byte are 0 and ignored. This is ``numpy.packbits(bits, axis=-1, bitorder="little")``.
* **Binary** weights ``w in {-1, +1}``: bit 1 means ``+1``, bit 0 means ``-1``.
  Packed tensor ``Wp``: ``uint8 [M, ceil(K / 8)]``.
* **Ternary** weights ``w in {-1, 0, +1}`` as two bit planes: ``Wp: uint8 [2, M, ceil(K / 8)]``,
  plane 0 marks the ``+1`` weights, plane 1 the ``-1`` weights, ``w = plane0 - plane1`` (the
  exporter never sets both bits of one weight).

Operators
---------
``BinaryConv2d(X, Wp) -> Y`` and ``TernaryConv2d(X, Wp) -> Y``
    ``X: [N, C, H, W]`` (``int8`` or ``uint8``), ``Y: int32 [N, M, OH, OW]``::

        Y[n, m, oh, ow] = sum_{c, i, j} Xpad[n, c, oh * sH + i, ow * sW + j] * w[m, c, i, j]

    Attributes: ``kernel_shape`` (ints ``[kH, kW]``, required), ``strides`` (ints ``[sH, sW]``,
    default ``[1, 1]``), ``pads`` (ints ``[top, left, bottom, right]``, default zeros; ``Xpad`` is
    ``X`` padded with the value 0). ``OH = (H + top + bottom - kH) // sH + 1`` (likewise ``OW``).
    No dilation, no groups. ``C`` is read from ``X``; ``K = C * kH * kW``.
``BinaryGemm(X, Wp) -> Y`` and ``TernaryGemm(X, Wp) -> Y``
    ``X: [N, K]`` (``int8`` or ``uint8``), ``Y: int32 [N, M]``, ``Y = X @ w.T`` (``w: [M, K]``,
    i.e. ONNX ``Gemm`` with ``transB = 1``, no ``C``, ``alpha = beta = 1``). No attributes.

How runtimes run them
---------------------
Every exported model carries a model-local ``FunctionProto`` per operator it uses (domain
``ai.robustq``), whose body is standard integer ONNX (``BitShift``/``BitwiseAnd`` unpacking,
``ConvInteger``/``MatMulInteger``), so stock onnxruntime inlines and runs it bit-exactly.
:func:`register_schemas` registers the schemas with the ``onnx`` Python package (type and shape
inference included) so ``onnx.checker`` and ``onnx.shape_inference`` know the operators by
name. Compilers lower the operator itself (XNOR/popcount for ``X in {-1, +1}``:
``sum(x * w) = K - 2 * popcount(xbits XOR wbits)``; zero-padded positions contribute 0, not
``+-1``, so such a kernel corrects for them when ``pads`` is nonzero) or inline the function.

Extending: add an :class:`OpSpec` to :data:`OPS`, a body in :func:`function_proto`, a numpy
implementation in :mod:`robustq_deploy.export.reference`, and bump nothing else: new operators
stay in opset version 1 until an existing one changes meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from ..registry import registry_of

DOMAIN = "ai.robustq"
VERSION = 1
# Lowest default-domain opset the function bodies are valid for (BitwiseAnd needs 18).
MIN_OPSET = 18


@dataclass(frozen=True)
class OpSpec:
    name: str
    weights: str  # "binary" or "ternary"
    layout: str  # "conv" or "gemm"


OPS = registry_of({s.name: s for s in (
    OpSpec("BinaryConv2d", "binary", "conv"),
    OpSpec("TernaryConv2d", "ternary", "conv"),
    OpSpec("BinaryGemm", "binary", "gemm"),
    OpSpec("TernaryGemm", "ternary", "gemm"),
)}, "ai.robustq operator")


def op_name(weights: str, layout: str) -> str:
    """The operator for ``weights`` ("binary"/"ternary") in ``layout`` ("conv"/"gemm")."""
    for s in OPS.values():
        if (s.weights, s.layout) == (weights, layout):
            return s.name
    raise KeyError(f"no ai.robustq operator for {weights} {layout}")


# ----------------------------------------------------------------------------- bit packing


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """``uint8 [..., ceil(K/8)]`` of a ``{0, 1}`` array ``[..., K]``: LSB-first, rows padded with 0."""
    b = np.asarray(bits)
    if b.size and not np.isin(b, (0, 1)).all():
        raise ValueError("pack_bits expects an array of 0 and 1")
    return np.packbits(b.astype(np.uint8), axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``uint8 {0, 1} [..., k]``."""
    return np.unpackbits(np.asarray(packed, np.uint8), axis=-1, count=k, bitorder="little")


def _rows(levels: np.ndarray) -> np.ndarray:
    lv = np.asarray(levels)
    return lv.reshape(lv.shape[0], -1)


def pack_binary(levels: np.ndarray) -> np.ndarray:
    """Binary weight levels ``{-1, +1}`` with output channels on axis 0 -> ``uint8 [M, ceil(K/8)]``."""
    rows = _rows(levels)
    if rows.size and not np.isin(rows, (-1, 1)).all():
        raise ValueError("binary weights must be -1 or +1")
    return pack_bits(rows > 0)


def pack_ternary(levels: np.ndarray) -> np.ndarray:
    """Ternary weight levels ``{-1, 0, +1}`` -> two planes ``uint8 [2, M, ceil(K/8)]`` (+1, -1)."""
    rows = _rows(levels)
    if rows.size and not np.isin(rows, (-1, 0, 1)).all():
        raise ValueError("ternary weights must be -1, 0 or +1")
    return np.stack([pack_bits(rows > 0), pack_bits(rows < 0)])


def unpack_weights(weights: str, packed: np.ndarray, k: int) -> np.ndarray:
    """``int8 [M, k]`` weight levels of a packed tensor (the op's semantics, used by the reference)."""
    if weights == "binary":
        return unpack_bits(packed, k).astype(np.int8) * 2 - 1
    if weights == "ternary":
        planes = unpack_bits(packed, k).astype(np.int8)
        return planes[0] - planes[1]
    raise ValueError(f"unknown packed weight kind {weights!r}")


def packed_weight_bytes(weights: str, m: int, k: int) -> int:
    return (2 if weights == "ternary" else 1) * m * ((k + 7) // 8)


# ----------------------------------------------------------------------------- function bodies


class _Body:
    """Tiny builder for function bodies (names are local to the function)."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self._n = 0

    def const(self, array) -> str:
        out = self._name("c")
        self.nodes.append(helper.make_node("Constant", [], [out], value=numpy_helper.from_array(np.asarray(array), out)))
        return out

    def ref_ints(self, attr: str) -> str:
        """A 1-D int64 constant holding the caller's attribute ``attr``."""
        out = self._name(attr)
        node = helper.make_node("Constant", [], [out])
        a = AttributeProto(name="value_ints", ref_attr_name=attr, type=AttributeProto.INTS)
        node.attribute.append(a)
        self.nodes.append(node)
        return out

    def op(self, op: str, inputs: list[str], out: str | None = None, ref_attrs: tuple[str, ...] = (), **attrs) -> str:
        out = out or self._name(op.lower())
        node = helper.make_node(op, inputs, [out], **attrs)
        for name in ref_attrs:
            node.attribute.append(AttributeProto(name=name, ref_attr_name=name, type=AttributeProto.INTS))
        self.nodes.append(node)
        return out

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"


def _unpack_rows(b: _Body, packed: str, k: str) -> str:
    """uint8 bits [..., K] of packed rows [..., B] (LSB first), as the spec says."""
    wu = b.op("Unsqueeze", [packed, b.const(np.array([-1], np.int64))])
    shifted = b.op("BitShift", [wu, b.const(np.arange(8, dtype=np.uint8))], direction="RIGHT")
    bits = b.op("BitwiseAnd", [shifted, b.const(np.array(1, np.uint8))])
    lead = b.op("Shape", [packed], start=0, end=-1)
    rows = b.op("Reshape", [bits, b.op("Concat", [lead, b.const(np.array([-1], np.int64))], axis=0)])
    return b.op("Slice", [rows, b.const(np.array([0], np.int64)), k, b.const(np.array([-1], np.int64))])


def _levels(b: _Body, weights: str, bits: str) -> str:
    """int8 weight levels [M, K] from the unpacked bits."""
    if weights == "binary":
        two = b.op("Mul", [b.op("Cast", [bits], to=TensorProto.INT8), b.const(np.array(2, np.int8))])
        return b.op("Sub", [two, b.const(np.array(1, np.int8))])
    planes = b.op("Cast", [bits], to=TensorProto.INT8)  # [2, M, K]
    plus = b.op("Gather", [planes, b.const(np.array(0, np.int64))], axis=0)
    minus = b.op("Gather", [planes, b.const(np.array(1, np.int64))], axis=0)
    return b.op("Sub", [plus, minus])


def function_proto(name: str, opset: int) -> onnx.FunctionProto:
    """Model-local definition of operator ``name`` in standard integer ONNX ops, for a model
    importing default-domain ``opset`` (a function must import the model's version)."""
    if opset < MIN_OPSET:
        raise ValueError(f"ai.robustq function bodies need opset >= {MIN_OPSET}")
    spec = OPS[name]
    b = _Body()
    if spec.layout == "conv":
        c = b.op("Shape", ["X"], start=1, end=2)
        cks = b.op("Concat", [c, b.ref_ints("kernel_shape")], axis=0)  # [C, kH, kW]
        k = b.op("ReduceProd", [cks], keepdims=1)
        w = _levels(b, spec.weights, _unpack_rows(b, "Wp", k))
        m = b.op("Shape", ["Wp"], start=-2, end=-1)
        w4 = b.op("Reshape", [w, b.op("Concat", [m, cks], axis=0)])
        b.op("ConvInteger", ["X", w4], out="Y", ref_attrs=("kernel_shape", "strides", "pads"))
        attrs = ["kernel_shape", "strides", "pads"]
    else:
        k = b.op("Shape", ["X"], start=1, end=2)
        w = _levels(b, spec.weights, _unpack_rows(b, "Wp", k))
        b.op("MatMulInteger", ["X", b.op("Transpose", [w], perm=[1, 0])], out="Y")
        attrs = []
    return helper.make_function(DOMAIN, name, ["X", "Wp"], ["Y"], b.nodes, [helper.make_opsetid("", opset)],
                                attributes=attrs, doc_string=f"{name}: see robustq_deploy.export.robustq_ops")


# ----------------------------------------------------------------------------- schemas


def _ints(ctx, name: str, default: list[int]) -> list[int]:
    a = ctx.get_attribute(name)
    return list(a.ints) if a is not None and a.ints else list(default)


def _dim(shape, i):
    """A copy of dimension ``i`` of a TensorShapeProto (or None when unknown)."""
    if shape is None or len(shape.dim) <= i:
        return None
    return shape.dim[i]


def _infer(spec: OpSpec):
    def infer(ctx) -> None:
        xt = ctx.get_input_type(0)
        wt = ctx.get_input_type(1)
        out = onnx.TypeProto()
        out.tensor_type.elem_type = TensorProto.INT32
        xs = xt.tensor_type.shape if xt is not None and xt.tensor_type.HasField("shape") else None
        ws = wt.tensor_type.shape if wt is not None and wt.tensor_type.HasField("shape") else None
        if xs is not None:
            m = _dim(ws, 1 if spec.weights == "ternary" else 0)
            dims = out.tensor_type.shape.dim
            dims.add().CopyFrom(xs.dim[0])
            d = dims.add()
            if m is not None:
                d.CopyFrom(m)
            if spec.layout == "conv":
                ks = _ints(ctx, "kernel_shape", [])
                st = _ints(ctx, "strides", [1, 1])
                pads = _ints(ctx, "pads", [0, 0, 0, 0])
                for axis in range(2):
                    src = _dim(xs, 2 + axis)
                    d = dims.add()
                    if src is not None and src.HasField("dim_value") and ks:
                        d.dim_value = (src.dim_value + pads[axis] + pads[axis + 2] - ks[axis]) // st[axis] + 1
        ctx.set_output_type(0, out)
    return infer


def _schema(spec: OpSpec) -> onnx.defs.OpSchema:
    S = onnx.defs.OpSchema
    attrs = []
    if spec.layout == "conv":
        attrs = [S.Attribute("kernel_shape", S.AttrType.INTS, "[kH, kW]", required=True),
                 S.Attribute("strides", S.AttrType.INTS, "[sH, sW], default [1, 1]", required=False),
                 S.Attribute("pads", S.AttrType.INTS, "[top, left, bottom, right], zero padding", required=False)]
    planes = "[2, M, ceil(K/8)] (+1 plane, -1 plane)" if spec.weights == "ternary" else "[M, ceil(K/8)]"
    schema = S(
        spec.name, DOMAIN, VERSION,
        doc=f"{spec.weights} {spec.layout} with weights packed 8 per byte; see robustq_deploy.export.robustq_ops",
        inputs=[S.FormalParameter("X", "T", "int8/uint8 activations, zero point 0"),
                S.FormalParameter("Wp", "tensor(uint8)", f"packed weights {planes}, LSB first")],
        outputs=[S.FormalParameter("Y", "tensor(int32)", "exact int32 accumulator")],
        type_constraints=[("T", ["tensor(int8)", "tensor(uint8)"], "activation type")],
        attributes=attrs,
    )
    schema.set_type_and_shape_inference_function(_infer(spec))
    return schema


def register_schemas() -> None:
    """Register the ``ai.robustq`` schemas with the onnx package (idempotent)."""
    for spec in OPS.values():
        if not onnx.defs.has(spec.name, DOMAIN):
            onnx.defs.register_schema(_schema(spec))


register_schemas()

__all__ = ["DOMAIN", "MIN_OPSET", "OPS", "OpSpec", "VERSION", "function_proto", "op_name", "pack_binary", "pack_bits",
           "pack_ternary", "packed_weight_bytes", "register_schemas", "unpack_bits", "unpack_weights"]
