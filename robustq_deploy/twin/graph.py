"""The graph twin: an ONNX model interpreted node by node in PyTorch.

:class:`GraphTwin` is an ``nn.Module`` mapping float images in [0, 1] (``[N, C, H, W]``) to the
logits of the ONNX graph. Its forward pass computes what the numpy reference interpreter
computes (:mod:`robustq_deploy.export.reference`): integer ops exactly, float ops of QDQ graphs
summed in float64 and rounded to float32 like the reference, quantizers with the reference's
rounding. Its backward pass differentiates smooth surrogates: straight-through at every rounding,
the gradient of a clamp at every saturation (:mod:`.values`). Ops the reference does not define
(onnxruntime's ``com.microsoft`` contrib ops) follow onnxruntime's CPU kernels (:mod:`.ops_contrib`).

Like the reference, construction scans the whole graph and raises one
:class:`~robustq_deploy.errors.UnsupportedError` naming every op without a rule, and runs each
fixed-point requantization chain (:func:`robustq_deploy.export.requant.match_requantize`) as one
fused step. A graph whose output is an ``ArgMax`` (labels) or a ``Softmax`` / ``LogSoftmax``
(probabilities) is differentiated at that op's input: the logits (:attr:`GraphTwin.output_kind`
says which).

To support another op: ``@twin_op("OpType", domain=...)`` (:mod:`.ops`) a function ``(ctx, *inputs:
Val) -> Val`` (or a list of them) in one of the ``ops_*`` modules.
"""
from __future__ import annotations

from pathlib import Path

import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from ..errors import ArtifactError, UnsupportedError
from ..export.requant import RequantMatch, match_requantize
from .inputs import PIXEL_LEVELS, InputSpec, input_spec
from .ops import TWIN_OPS, TwinOpContext
from .values import Val, const_val, int_val

# "exact": float convolutions and products of QDQ / float graphs summed in float64 and rounded to
# float32, as the reference does (its logits, bit for bit); "fast": summed in float32 (3-4x faster
# on a CPU; the logits then lie within the reference's rounding-deviation bound, like any engine's).
# Integer ops are exact either way. Attacks may differentiate the fast twin; scores use the exact one.
PRECISIONS = ("exact", "fast")
# final ops whose input is the logits (the twin differentiates the logits, not labels or probabilities)
_HEADS = {"ArgMax": "labels", "Softmax": "probabilities", "LogSoftmax": "log-probabilities"}


def _domain(node: onnx.NodeProto) -> str:
    return node.domain if node.domain != "ai.onnx" else ""


def load_model(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model))
    except Exception as exc:  # protobuf raises several types for corrupt files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{model}: not an ONNX model ({first})") from None


class GraphTwin(nn.Module):
    """A differentiable twin of an ONNX classifier (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto | str | Path, spec: InputSpec | None = None, precision: str = "exact"):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
        self.precision = precision
        model = load_model(model)
        g = model.graph
        missing = sorted({f"{n.domain}::{n.op_type}" if _domain(n) else n.op_type
                          for n in g.node if (_domain(n), n.op_type) not in TWIN_OPS})
        if missing:
            raise UnsupportedError(f"the ONNX twin has no rule for: {', '.join(missing)}")
        if len(g.output) != 1:
            raise UnsupportedError(f"verify needs a model with one output, this one has {[o.name for o in g.output]}")
        self.model = model
        self.spec = spec or input_spec(model)
        self.consts = {i.name: const_val(numpy_helper.to_array(i), i.data_type) for i in g.initializer}
        producers = {o: n for n in g.node for o in n.output}
        out = g.output[0].name
        self.output_kind = "logits"
        head = producers.get(out)
        if head is not None and head.op_type in _HEADS:
            self.output_kind, out = _HEADS[head.op_type], head.input[0]
        self.logits_name = out
        names = [n.name for n in g.node]
        matches = match_requantize(g) if len(set(names)) == len(names) and "" not in names else []
        first = {m.nodes[0]: m for m in matches}
        fused = {name for m in matches for name in m.nodes}
        self._plan: list[tuple[onnx.NodeProto | RequantMatch, TwinOpContext | None]] = []
        needed = self._needed(g, producers, out)
        for node in g.node:
            if node.name in first:
                self._plan.append((first[node.name], None))
            elif node.name not in fused and id(node) in needed:
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                self._plan.append((node, TwinOpContext(node, attrs, fast=precision == "fast")))

    @staticmethod
    def _needed(g: onnx.GraphProto, producers: dict, out: str) -> set[int]:
        """Nodes the logits depend on (a stripped head and dead branches are not run)."""
        keep, todo = set(), [out]
        while todo:
            n = producers.get(todo.pop())
            if n is not None and id(n) not in keep:
                keep.add(id(n))
                todo.extend(i for i in n.input if i)
        return keep

    def feed(self, x: torch.Tensor) -> Val:
        """Float images in [0, 1] -> the graph input, differentiably (pixels rounded straight-through
        for a uint8 input)."""
        xa = self.spec.arrange(x)
        if self.spec.dtype == "uint8":
            p = xa.to(torch.float64) * PIXEL_LEVELS
            exact = torch.clamp(torch.round(p.detach()), 0, PIXEL_LEVELS).to(torch.int64)
            return int_val(exact, onnx.TensorProto.UINT8, p.clamp(0, PIXEL_LEVELS))
        scale = self.spec.pixel_scale * PIXEL_LEVELS
        return Val((xa * scale if scale != 1.0 else xa).to(torch.float32), onnx.TensorProto.FLOAT)

    def run(self, x: torch.Tensor) -> dict[str, Val]:
        """Every value computed for ``x`` (initializers excluded)."""
        from .ops_quant import fused_requantize

        values: dict[str, Val] = dict(self.consts)
        values[self.spec.name] = self.feed(x)
        for step, ctx in self._plan:
            if ctx is None:
                values[step.output] = fused_requantize(step, values[step.input])
                continue
            fn = TWIN_OPS[(_domain(step), step.op_type)]
            outs = fn(ctx, *[values[i] if i else None for i in step.input])
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for name, v in zip(step.output, outs):
                if name:
                    values[name] = v
        return {k: v for k, v in values.items() if k not in self.consts}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.run(x)[self.logits_name]
        t = v.t.to(torch.float32)
        return t.reshape(t.shape[0], -1) if t.ndim != 2 else t


def graph_twin(path: str | Path, input_range: str = "auto", precision: str = "exact") -> GraphTwin:
    """The twin of the ONNX file at ``path``."""
    model = load_model(path)
    return GraphTwin(model, input_spec(model, input_range), precision).eval()


__all__ = ["GraphTwin", "graph_twin", "load_model"]
