"""The interpreter: runs an ONNX graph node by node with numpy functions.

Op functions are registered per ``(domain, op_type)`` with :func:`reference_op`; one receives an
:class:`OpContext` (attributes, ONNX element types of the inputs) and the input arrays, and
returns its output arrays. Construction scans the whole graph and raises one
:class:`~robustq_deploy.errors.UnsupportedError` listing every operator without a function.

Requantization chains (:func:`~robustq_deploy.export.requant.match_requantize`) run fused, as
one call of :func:`robustq_deploy.fixed_point.requantize`, unless ``fuse_requant=False``,
which executes their ops one by one (the tests check that both give the same bits).

Types: int4 / uint4 tensors are held as int8 / uint8 arrays; the ONNX element type of every
value is tracked next to it, so saturating ops know their real range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...dtypes import DTYPES, dtype
from ...errors import ArtifactError, InputError, UnsupportedError
from ...fixed_point import requantize
from ...registry import Registry
from ..requant import RequantMatch, match_requantize

OpFn = Callable[..., Any]
REFERENCE_OPS: Registry[OpFn] = Registry("reference op")  # keyed by (domain, op_type)


def reference_op(*op_types: str, domain: str = ""):
    """Register the decorated numpy function as the reference of ``op_types`` in ``domain``."""
    def deco(fn: OpFn) -> OpFn:
        for op in op_types:
            REFERENCE_OPS.add((domain, op), fn)
        return fn
    return deco


def supported_ops() -> list[str]:
    return sorted(f"{d}::{o}" if d else o for d, o in REFERENCE_OPS.names())


# ONNX element type -> numpy dtype of the array that holds it (4-bit types widened), from the
# project's dtype table; the integer types quantization ops produce and their ranges.
NP_TYPES = {d.onnx: np.dtype(d.storage).type for d in DTYPES.values()}
INT_RANGES = {d.onnx: (d.qmin, d.qmax) for d in map(dtype, ("uint8", "int8", "uint16", "int16", "int32", "int4", "uint4"))}


def onnx_type(a: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype)


@dataclass
class OpContext:
    node: onnx.NodeProto
    input_types: list[int | None]
    out_types: list[int] | None = None  # set by op functions whose output type numpy cannot tell (int4)
    attrs: dict[str, Any] = field(default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


def _to_array(t: onnx.TensorProto) -> np.ndarray:
    a = numpy_helper.to_array(t)
    return a.astype(NP_TYPES[t.data_type]) if t.data_type in (TensorProto.INT4, TensorProto.UINT4) else a


class ReferenceSession:
    """Run an ONNX model with the project's integer semantics.

    ``ReferenceSession(model).run(None, {"input": x})`` mirrors ``onnxruntime.InferenceSession``;
    :meth:`run_all` returns every intermediate value (accumulators included).
    """

    def __init__(self, model: onnx.ModelProto | str | Path, fuse_requant: bool = True):
        if not isinstance(model, onnx.ModelProto):
            try:
                model = onnx.load(str(model))
            except Exception as exc:  # protobuf raises several types for corrupt files
                raise ArtifactError(f"{model}: not an ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        self.model = model
        g = model.graph
        missing = sorted({f"{n.domain}::{n.op_type}" if n.domain else n.op_type
                          for n in g.node if (n.domain if n.domain != "ai.onnx" else "", n.op_type) not in REFERENCE_OPS})
        if missing:
            raise UnsupportedError(f"the numpy reference has no function for: {', '.join(missing)}")
        self.consts = {i.name: _to_array(i) for i in g.initializer}
        self.types = {i.name: i.data_type for i in g.initializer}
        for v in list(g.input) + list(g.output):
            self.types.setdefault(v.name, v.type.tensor_type.elem_type)
        init = set(self.consts)
        self.input_names = [v.name for v in g.input if v.name not in init]
        self.output_names = [v.name for v in g.output]
        self.matches = match_requantize(g) if fuse_requant else []
        self._plan = self._make_plan()

    def _make_plan(self) -> list[onnx.NodeProto | RequantMatch]:
        first = {m.nodes[0]: m for m in self.matches}
        fused = {name for m in self.matches for name in m.nodes}
        names = [n.name for n in self.model.graph.node]
        if len(set(names)) != len(names) or "" in names:  # fusion keys on node names
            first, fused = {}, set()
        plan: list[onnx.NodeProto | RequantMatch] = []
        for node in self.model.graph.node:
            if node.name in first:
                plan.append(first[node.name])
            elif node.name not in fused:
                plan.append(node)
        return plan

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        values = self.run_all(feeds)
        return [values[n] for n in (output_names or self.output_names)]

    def run_all(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every value of the graph (initializers excluded) after running on ``feeds``."""
        unknown = sorted(set(feeds) - set(self.input_names))
        missing = [n for n in self.input_names if n not in feeds]
        if unknown or missing:
            raise InputError(f"inputs {sorted(feeds)} do not match the model's {self.input_names}")
        values: dict[str, np.ndarray] = dict(self.consts)
        types = dict(self.types)
        for name in self.input_names:
            values[name] = np.asarray(feeds[name])
        for step in self._plan:
            if isinstance(step, RequantMatch):
                y = requantize(values[step.input], step.m0, step.n, 0, step.qmin, step.qmax)
                values[step.output] = y.astype(NP_TYPES[step.out_type])
                types[step.output] = step.out_type
                continue
            self._run_node(step, values, types)
        return {k: v for k, v in values.items() if k not in self.consts}

    @staticmethod
    def _run_node(node: onnx.NodeProto, values: dict, types: dict) -> None:
        domain = node.domain if node.domain != "ai.onnx" else ""
        fn = REFERENCE_OPS[(domain, node.op_type)]
        ins = [values[i] if i else None for i in node.input]
        ctx = OpContext(node, [types.get(i) if i else None for i in node.input],
                          attrs={a.name: helper.get_attribute_value(a) for a in node.attribute})
        outs = fn(ctx, *ins)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for i, (name, out) in enumerate(zip(node.output, outs)):
            if name:
                values[name] = out
                types[name] = ctx.out_types[i] if ctx.out_types else onnx_type(out)


def run_reference(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``model`` on ``feeds``, by name."""
    sess = ReferenceSession(model)
    return dict(zip(sess.output_names, sess.run(None, feeds)))


__all__ = ["INT_RANGES", "NP_TYPES", "OpContext", "REFERENCE_OPS", "ReferenceSession", "onnx_type", "reference_op", "run_reference",
           "supported_ops"]
