"""ONNX -> Relax import: the project's converters registered alongside TVM's ONNX frontend.

How the two sets of converters meet
-----------------------------------
TVM 0.27 converts a graph with ``tvm.relax.frontend.onnx.onnx_frontend.ONNXGraphImporter``,
which consults its module-level op map (``_get_convert_map()``) in exactly two methods:
``_check_for_unsupported_ops`` (the up-front scan) and ``_convert_operator`` (one node).
:class:`RobustqImporter` subclasses the importer and overrides those two methods, plus
``_parse_array`` (sub-byte initializers, which TVM cannot copy: "TensorCopyFromBytes: size
mismatch"). Before import, every node that the project's registry (:mod:`.registry`) covers is
tagged with a private attribute holding its index; ``_convert_operator`` sends tagged nodes to
their registered converter and every other node to TVM's, unchanged. Nothing in TVM is
patched, so stock TVM keeps working in the same process, and the project's converters win over
TVM's for the ops both know (QuantizeLinear, DequantizeLinear, ...). The hook points are pinned
by ``tests/compile/test_importer.py``; revisit this module when the TVM pin moves.

:func:`scan` runs first: it resolves each node to a converter (the project's for its domain and
opset, else TVM's for the default domain), asks project converters for type/attribute problems,
and raises ONE :class:`~robustq_deploy.errors.UnsupportedError` listing every problem.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import UnsupportedError
from .dtypes import storage_dtype
from .implementations import layer
from .registry import DEFAULT_DOMAIN, ConverterContext, converter_for, normalize_domain

NODE_MARK = "__robustq_node"
_SUB_BYTE_TYPES = {TensorProto.INT4, TensorProto.UINT4}


@dataclass(frozen=True)
class PlannedNode:
    """A node the project converts: the original node, its converter and context data."""

    node: onnx.NodeProto
    impl: Callable
    opset: int
    in_types: tuple[int | None, ...]
    out_types: tuple[int | None, ...]


def opsets_of(model: onnx.ModelProto) -> dict[str, int]:
    return {normalize_domain(o.domain): o.version for o in model.opset_import}


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every value whose type is known (declared or inferred)."""
    g = model.graph
    types: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph.value_info
    except Exception:  # inference is best effort: contrib domains, odd shapes
        inferred = []
    for v in [*g.input, *g.output, *g.value_info, *inferred]:
        if v.type.tensor_type.elem_type:
            types.setdefault(v.name, v.type.tensor_type.elem_type)
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant" and normalize_domain(n.domain) == DEFAULT_DOMAIN:
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


# Ops that keep a tensor of -1/+1 values -1/+1 (data movement, max, integer casts).
_BINARY_PRESERVING = ("MaxPool", "Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Transpose", "Cast")


def binary_values(model: onnx.ModelProto) -> frozenset[str]:
    """Values provably holding only -1 and +1: ``Where(cond, a, b)`` with constant ``a``, ``b``
    in {-1, +1} (the sign thresholds of binary layers), and what data movement makes of them.
    Bit-packed kernels use it to pick XNOR/popcount (see :mod:`.ops.robustq`)."""
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    found: set[str] = set()
    for n in g.node:
        if normalize_domain(n.domain) != DEFAULT_DOMAIN:
            continue
        if n.op_type == "Where" and len(n.input) == 3:
            branches = [consts.get(n.input[1]), consts.get(n.input[2])]
            if all(b is not None and b.size and np.isin(b, (-1, 1)).all() for b in branches):
                found.add(n.output[0])
        elif n.op_type in _BINARY_PRESERVING and n.input and n.input[0] in found:
            found.add(n.output[0])
    return frozenset(found)


def _stock_ops() -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return set(_get_convert_map()) | {"Constant", "If"}


def plan(model: onnx.ModelProto) -> tuple[dict[int, PlannedNode], list[str]]:
    """Resolve every node to a converter; returns the project's nodes and all problems."""
    from . import ops  # noqa: F401  (registers the project's converters)

    opsets = opsets_of(model)
    types = value_types(model)
    stock = _stock_ops()
    planned: dict[int, PlannedNode] = {}
    problems: list[str] = []
    for i, node in enumerate(model.graph.node):
        domain = normalize_domain(node.domain)
        name = f"{domain}::{node.op_type}" if domain else node.op_type
        conv = converter_for(domain, node.op_type)
        if conv is None:
            if domain != DEFAULT_DOMAIN or node.op_type not in stock:
                problems.append(f"{name} (no converter)")
            continue
        opset = opsets.get(domain, 1)
        impl = conv.for_opset(opset)
        if impl is None:
            problems.append(f"{name} (opset {opset}; converters exist from opset {conv.versions()[0]})")
            continue
        in_types = tuple(types.get(x) if x else None for x in node.input)
        out_types = tuple(types.get(x) for x in node.output)
        problems.extend(conv.check(ConverterContext(None, node, opset, in_types, out_types)))
        planned[i] = PlannedNode(node, impl, opset, in_types, out_types)
    return planned, problems


def scan(model: onnx.ModelProto, source: str = "model", extra: list[str] = ()) -> dict[int, PlannedNode]:
    """The import plan; raises one UnsupportedError naming every unsupported op (and ``extra``
    problems found by the caller, e.g. ops the target does not offer)."""
    planned, problems = plan(model)
    problems = [*extra, *problems]
    if problems:
        counts = Counter(problems)
        listed = [p if counts[p] == 1 else f"{p} x{counts[p]}" for p in dict.fromkeys(problems)]
        raise UnsupportedError(f"{source}: cannot compile {len(problems)} node(s): " + "; ".join(listed))
    return planned


def _importer_class():
    """RobustqImporter, built on first use so that importing this module does not load TVM."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class RobustqImporter(ONNXGraphImporter):
        def __init__(self, planned: dict[int, PlannedNode], target, binary: frozenset[str], **kwargs):
            super().__init__(**kwargs)
            self._planned = planned
            self._target = target
            self._binary = binary

        def _check_for_unsupported_ops(self, graph):
            # scan() has already refused the model if anything is unsupported; TVM's own check
            # would reject the ops only the project's converters know.
            return None

        def _parse_array(self, tensor_proto):
            if tensor_proto.data_type in _SUB_BYTE_TYPES:
                arr = numpy_helper.to_array(tensor_proto).astype(storage_dtype(tensor_proto.data_type))
                return tvm.runtime.tensor(arr)
            return super()._parse_array(tensor_proto)

        def _convert_operator(self, op_name, inputs, attrs, opset):
            index = attrs.pop(NODE_MARK, None)
            if index is None:
                return super()._convert_operator(op_name, inputs, attrs, opset)
            p = self._planned[index]
            ctx = ConverterContext(self.bb, p.node, p.opset, p.in_types, p.out_types, self._target, self._binary)
            with layer(p.node.name or p.node.output[0]):
                sym = p.impl(ctx, inputs)
            return self.bb.normalize(sym) if isinstance(sym, relax.Expr) else sym

    return RobustqImporter


def import_onnx(model: onnx.ModelProto, source: str = "model", target=None, extra: list[str] = ()):
    """ONNX model -> Relax IRModule (weights as constants, data inputs as parameters).

    ``target`` (a :class:`targets.TargetDesc`) lets kernel implementations specialise."""
    planned = scan(model, source, extra)
    tagged = onnx.ModelProto()
    tagged.CopyFrom(model)
    for i in planned:
        tagged.graph.node[i].attribute.append(helper.make_attribute(NODE_MARK, i))
    init = {t.name for t in model.graph.initializer}
    dtypes = {}
    for v in model.graph.input:
        if v.name not in init:
            t = v.type.tensor_type.elem_type
            dtypes[v.name] = storage_dtype(t) if t in _SUB_BYTE_TYPES else helper.tensor_dtype_to_np_dtype(t).name
    importer = _importer_class()(planned, target, binary_values(model), shape_dict={}, dtype_dict=dtypes,
                                 keep_params_in_input=False)
    opset = opsets_of(model).get(DEFAULT_DOMAIN, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TVM warns about renamed inputs and symbolic dims
        return importer.from_onnx(tagged.graph, opset)


__all__ = ["NODE_MARK", "PlannedNode", "binary_values", "import_onnx", "plan", "scan", "value_types"]
