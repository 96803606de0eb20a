"""QDQ pattern rewrite: quantized layers of a QDQ graph become integer ops before import.

A QDQ graph computes every layer in float between DequantizeLinear and QuantizeLinear nodes.
:func:`rewrite_qdq` finds, for each Conv / MatMul / Gemm::

    DQ(x_q) --.
    DQ(w_q) ---> Conv | MatMul | Gemm --> [Relu | Clip | MaxPool | Flatten | Reshape ...]* --> Q --> y_q
    DQ(b_i32) -'   (bias optional; its scale must equal x_scale * w_scale)

and replaces the float layer by one fused integer op (``FusedConv`` / ``FusedMatMul`` /
``FusedGemm`` in the private domain :data:`FUSED_DOMAIN`): int32 accumulation of the integer
tensors, int32 bias, then requantization straight to ``Q``'s grid. ReLU and constant Clips are
folded into the integer clamp (``Q`` is monotone, so ``Q(clip(y, a, b)) = clip(Q(y), Q(a),
Q(b))``); max pooling, flatten and reshape run on the integer tensor (requantization is
monotone, so it commutes with them). A layer without a ``Q`` after it (the logits) gets a float
output ``float32(acc) * float32(x_scale * w_scale)``. A chain ``DQ -> [MaxPool | Flatten |
...]* -> Q`` with the same scale, zero point and type on both ends becomes the integer chain.

Requantization (``requant``): ``"fixed-point"`` is the project's rescale
(:mod:`robustq_deploy.fixed_point`, what the ``integer`` export computes); ``"float"``
is onnxruntime's QLinearConv rescale, which is what onnxruntime itself runs for QDQ graphs
after its own QDQ fusion (bit-exact with it). Against a *float* execution of the QDQ graph both
differ only where the float accumulation and the integer accumulation round to different sides
of a quantization step: at most 1 LSB per requantized activation of a layer, given identical
inputs (``tests/compile/test_qdq.py`` measures it); errors can then propagate through later
layers like any other 1-LSB difference.

With ``"float"`` requantization (graphs quantized elsewhere) a residual add on quantized tensors::

    DQ(a_q) --.
    DQ(b_q) ---> Add --> Q --> c_q     (per-tensor, one 8-bit type on all three, equal shapes)

becomes ``com.microsoft::QLinearAdd``: onnxruntime fuses the same pattern into that op and runs
MLAS's formula on it (:mod:`.ops.add` lowers it the same way), where a float add followed by
QuantizeLinear can round a near-tie to the other side (one LSB, seen on residual adds of
onnxruntime-quantized ResNet-18 and MobileNetV2).

Layers that do not match (float weights, a bias on another grid, per-channel activations, a
float consumer) stay float and are listed in the report, so a manifest says which parts of a
model do not run as integer code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..dtypes import DType
from .dtypes import QTYPES

FUSED_DOMAIN = "ai.robustq.compile"  # internal: produced by the rewrites, never written to a file
REQUANT_MODES = ("fixed-point", "float")
_DQ, _Q = "DequantizeLinear", "QuantizeLinear"
_QDQ_DOMAINS = ("", "ai.onnx", "com.microsoft")
# Unary ops that commute with a monotone per-tensor requantization (pure data movement or max).
COMMUTING = ("MaxPool", "Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Transpose")
_LAYERS = {"Conv": "FusedConv", "MatMul": "FusedMatMul", "Gemm": "FusedGemm"}


@dataclass
class QdqReport:
    fused: list[str] = field(default_factory=list)  # layers now computed as integer code
    passthrough: list[str] = field(default_factory=list)  # DQ -> ... -> Q chains now integer
    float_layers: list[str] = field(default_factory=list)  # "name (op): reason"
    adds: list[str] = field(default_factory=list)  # DQ, DQ -> Add -> Q now QLinearAdd

    def as_meta(self) -> dict:
        return {"fused": self.fused, "integer_chains": self.passthrough, "float_layers": self.float_layers,
                "qlinear_adds": self.adds}


class GraphView:
    """Producers, consumers and constants of a graph (read-only helper of the rewrites)."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def only_consumer(self, value: str) -> onnx.NodeProto | None:
        us = self.consumers.get(value, [])
        return us[0] if len(us) == 1 and value not in self.outputs else None

    def produced_by(self, value: str, op: str) -> onnx.NodeProto | None:
        n = self.producer.get(value)
        return n if n is not None and n.op_type == op and n.domain in _QDQ_DOMAINS else None


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


@dataclass(frozen=True)
class _QParams:
    """Constant per-tensor or per-axis scale / zero point of a Q or DQ node."""

    scale: np.ndarray
    zero: np.ndarray
    axis: int
    zero_name: str | None

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1


def _qparams(view: GraphView, node: onnx.NodeProto) -> _QParams | None:
    if attr(node, "block_size", 0):
        return None
    scale = view.const(node.input[1])
    zname = node.input[2] if len(node.input) > 2 and node.input[2] else None
    zero = view.const(zname) if zname else np.zeros((), np.uint8)
    if scale is None or zero is None or scale.dtype != np.float32:
        return None
    return _QParams(scale, zero, attr(node, "axis", 1), zname)


class _Rewriter:
    def __init__(self, model: onnx.ModelProto, requant: str):
        self.model = model
        self.view = GraphView(model.graph)
        self.requant = requant
        self.report = QdqReport()
        self.replace: dict[int, list[onnx.NodeProto]] = {}  # node index -> replacement nodes
        self.removed: set[int] = set()
        self.index = {id(n): i for i, n in enumerate(model.graph.node)}
        self.new_inits: list[onnx.TensorProto] = []
        self.names = {o for n in model.graph.node for o in n.output} | {t.name for t in model.graph.initializer}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def idx(self, node: onnx.NodeProto) -> int:
        return self.index[id(node)]

    def taken(self, *nodes: onnx.NodeProto) -> bool:
        return any(self.idx(n) in self.removed or self.idx(n) in self.replace for n in nodes)

    # ------------------------------------------------------------------ layers
    def layer(self, node: onnx.NodeProto) -> None:
        label = f"{node.name or node.output[0]} ({node.op_type})"
        why = self._try_layer(node)
        if why:
            self.report.float_layers.append(f"{label}: {why}")
        else:
            self.report.fused.append(label)

    def _try_layer(self, node: onnx.NodeProto) -> str | None:
        v = self.view
        if node.op_type == "Gemm" and (attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0
                                       or attr(node, "beta", 1.0) != 1.0):
            return "Gemm with transA, alpha or beta"
        x_dq = v.produced_by(node.input[0], _DQ)
        w_dq = v.produced_by(node.input[1], _DQ)
        if x_dq is None or w_dq is None:
            return "input or weight is not dequantized (float layer)"
        xq, wq = _qparams(v, x_dq), _qparams(v, w_dq)
        w = v.const(w_dq.input[0])
        if xq is None or wq is None or w is None:
            return "scales, zero points or weights are not constants"
        if not xq.per_tensor:
            return "per-channel activation quantization"
        out_axis = {"Conv": 0, "MatMul": w.ndim - 1, "Gemm": 0 if attr(node, "transB", 0) else 1}[node.op_type]
        if not wq.per_tensor and (wq.axis % w.ndim) != out_axis:
            return "weights are not quantized per output channel"
        if node.op_type == "MatMul" and w.ndim != 2:
            return "MatMul weight is not a matrix"
        acc_scale = (xq.scale.reshape(()) * wq.scale.reshape(-1)).astype(np.float32)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            b_dq = v.produced_by(node.input[2], _DQ)
            bq = _qparams(v, b_dq) if b_dq is not None else None
            b = v.const(b_dq.input[0]) if b_dq is not None else None
            if bq is None or b is None or b.dtype != np.int32 or np.any(bq.zero):
                return "bias is not an int32 constant behind DequantizeLinear"
            if not np.array_equal(np.broadcast_to(bq.scale.reshape(-1), acc_scale.shape), acc_scale):
                return "bias scale differs from x_scale * w_scale"
            bias = b_dq.input[0]
        # Walk forward: ReLU / constant Clip (folded into the clamp), commuting ops, then Q.
        cur, clamps, chain, q = node.output[0], [], [], None
        while True:
            c = v.only_consumer(cur)
            if c is None or self.taken(c) or c.domain not in ("", "ai.onnx", "com.microsoft"):
                break
            if c.op_type == _Q and c.domain in _QDQ_DOMAINS:
                q = c
                break
            if c.op_type == "Relu" or (c.op_type == "Clip" and _clip_bounds(v, c) is not None):
                clamps.append(c)
            elif c.op_type in COMMUTING and c.domain in ("", "ai.onnx") and len(c.output) == 1:
                chain.append(c)
            else:
                break
            cur = c.output[0]
        qq = _qparams(v, q) if q is not None else None
        q_type = _elem_type(v, _opt(q, 2)) if q is not None and _opt(q, 2) else (
            (attr(q, "output_dtype", 0) or onnx.TensorProto.UINT8) if q is not None else None)
        if q is not None and (qq is None or not qq.per_tensor or q_type not in QTYPES):
            q = None
        if q is None:  # float output at the layer itself; what follows stays as it is
            clamps, chain = [], []
        inputs = [x_dq.input[0], x_dq.input[1], _opt(x_dq, 2), w_dq.input[0], w_dq.input[1], _opt(w_dq, 2),
                  q.input[1] if q else "", _opt(q, 2) if q else "", bias or ""]
        if q is not None and not _opt(q, 2):  # Q without zero point: zero 0 on output_dtype's grid
            inputs[7] = self._zero(q_type)
        out = (self.fresh(f"{node.output[0]}_q") if chain else q.output[0]) if q else node.output[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs.update(requant=self.requant, w_axis=out_axis)
        if q is not None:
            attrs.update(zip(("lo", "hi"), _clamp_range(v, clamps, qq, QTYPES[q_type])))
        fused = helper.make_node(_LAYERS[node.op_type], inputs, [out], name=node.name or None,
                                 domain=FUSED_DOMAIN, **attrs)
        self.replace[self.idx(node)] = [fused]
        for n in [*clamps, q]:
            if n is not None:
                self.removed.add(self.idx(n))
        if chain:
            self._rewire_chain(chain, out, q.output[0])
        return None

    def _zero(self, elem_type: int) -> str:
        name = self.fresh("qdq_zero_point")
        zero = helper.make_tensor(name, elem_type, [], [0])
        self.new_inits.append(zero)
        return name

    def _rewire_chain(self, chain: list[onnx.NodeProto], first_input: str, last_output: str) -> None:
        """Run the commuting ops on the integer tensor: new value names, last one = Q's output."""
        prev = first_input
        for k, c in enumerate(chain):
            n = onnx.NodeProto()
            n.CopyFrom(c)
            n.input[0] = prev
            n.output[0] = last_output if k == len(chain) - 1 else self.fresh(f"{c.output[0]}_q")
            prev = n.output[0]
            self.replace[self.idx(c)] = [n]

    # ------------------------------------------------------------------ DQ, DQ -> Add -> Q
    def add(self, node: onnx.NodeProto, shapes: dict[str, list]) -> None:
        """The residual-add pattern as onnxruntime's QLinearAdd (see the module docstring)."""
        v = self.view
        if len(node.input) != 2 or len(node.output) != 1:
            return
        dqs = [v.produced_by(i, _DQ) for i in node.input]
        q = v.only_consumer(node.output[0])
        if any(d is None for d in dqs) or q is None or q.op_type != _Q or q.domain not in _QDQ_DOMAINS:
            return
        if self.taken(node, q):
            return
        params = [_qparams(v, d) for d in dqs] + [_qparams(v, q)]
        if any(p is None or not p.per_tensor for p in params):
            return
        q_type = _elem_type(v, _opt(q, 2)) if _opt(q, 2) else (attr(q, "output_dtype", 0) or onnx.TensorProto.UINT8)
        types = {_input_type(v, dqs[0].input[0]), _input_type(v, dqs[1].input[0]), q_type}
        if len(types) != 1 or q_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            return
        a_shape, b_shape = (shapes.get(i) for i in node.input)
        if a_shape is None or b_shape is None or not add_broadcast_mirrored(a_shape, b_shape):
            return
        zeros = [_opt(n, 2) or self._zero(q_type) for n in (*dqs, q)]
        inputs = [dqs[0].input[0], dqs[0].input[1], zeros[0], dqs[1].input[0], dqs[1].input[1], zeros[1],
                  q.input[1], zeros[2]]
        self.replace[self.idx(node)] = [helper.make_node("QLinearAdd", inputs, [q.output[0]], name=node.name or None,
                                                         domain="com.microsoft")]
        self.removed.add(self.idx(q))
        self.report.adds.append(node.name or node.output[0])

    # ------------------------------------------------------------------ DQ -> ... -> Q chains
    def passthrough(self, dq: onnx.NodeProto) -> None:
        v = self.view
        dqp = _qparams(v, dq)
        if dqp is None or not dqp.per_tensor:
            return
        for c in list(v.consumers.get(dq.output[0], [])):
            chain, cur, q = [], dq.output[0], None
            node = c
            while node is not None and not self.taken(node):
                if node.op_type == _Q and node.domain in _QDQ_DOMAINS:
                    q = node
                    break
                if node.op_type not in COMMUTING or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
                    break
                chain.append(node)
                cur = node.output[0]
                node = v.only_consumer(cur)
            if q is None or not chain or (chain[0] is not c):
                continue
            qp = _qparams(v, q)
            if qp is None or not qp.per_tensor or not _same_grid(v, dq, dqp, q, qp):
                continue
            self._rewire_chain(chain, dq.input[0], q.output[0])
            self.removed.add(self.idx(q))
            self.report.passthrough.append(" -> ".join([_DQ, *(n.op_type for n in chain), _Q]))

    def run(self) -> onnx.ModelProto:
        g = self.model.graph
        for node in g.node:
            if node.op_type in _LAYERS and node.domain in ("", "ai.onnx") and not self.taken(node):
                self.layer(node)
        if self.requant == "float":
            adds = [n for n in g.node if n.op_type == "Add" and n.domain in ("", "ai.onnx")]
            shapes = _value_shapes(self.model) if adds else {}
            for node in adds:
                self.add(node, shapes)
        for node in g.node:
            if node.op_type == _DQ and node.domain in _QDQ_DOMAINS:
                self.passthrough(node)
        nodes = []
        for i, n in enumerate(g.node):
            if i in self.removed:
                continue
            nodes.extend(self.replace.get(i, [n]))
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        del out.graph.node[:]
        out.graph.node.extend(prune(nodes, {o.name for o in g.output}))
        out.graph.initializer.extend(self.new_inits)
        used = {i for n in out.graph.node for i in n.input}
        keep = [t for t in out.graph.initializer if t.name in used]
        del out.graph.initializer[:]
        out.graph.initializer.extend(keep)
        if self.report.fused or self.report.passthrough:
            out.opset_import.append(helper.make_opsetid(FUSED_DOMAIN, 1))
        if self.report.adds and not any(o.domain == "com.microsoft" for o in out.opset_import):
            out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        return out


def _clip_bounds(v: GraphView, clip: onnx.NodeProto) -> tuple[float, float] | None:
    """Constant (min, max) of a Clip (opset >= 11 inputs, or the old attributes)."""
    lo, hi = -np.inf, np.inf
    if len(clip.input) > 1 and clip.input[1]:
        c = v.const(clip.input[1])
        if c is None:
            return None
        lo = float(c)
    if len(clip.input) > 2 and clip.input[2]:
        c = v.const(clip.input[2])
        if c is None:
            return None
        hi = float(c)
    return max(lo, attr(clip, "min", -np.inf)), min(hi, attr(clip, "max", np.inf))


def _quantize_scalar(value: float, qp: _QParams, qt: DType) -> int:
    """ONNX QuantizeLinear of one float constant (float32 division, half to even, saturate)."""
    if np.isinf(value):
        return qt.qmin if value < 0 else qt.qmax
    q = np.rint(np.float32(value) / qp.scale.astype(np.float32).reshape(())) + int(qp.zero.reshape(()))
    return int(np.clip(q, qt.qmin, qt.qmax))


def _clamp_range(v: GraphView, clamps: list[onnx.NodeProto], qp: _QParams, qt: DType) -> tuple[int, int]:
    """Integer clamp equivalent to ReLU / Clip in float before Q: Q is monotone, so
    ``Q(clip(y, a, b)) = clip(Q(y), Q(a), Q(b))`` (ReLU is ``clip(y, 0, inf)``)."""
    lo, hi = qt.qmin, qt.qmax
    for c in clamps:
        a, b = (0.0, np.inf) if c.op_type == "Relu" else _clip_bounds(v, c)
        lo, hi = max(lo, _quantize_scalar(a, qp, qt)), min(hi, _quantize_scalar(b, qp, qt))
    return lo, hi


def _opt(node: onnx.NodeProto | None, i: int) -> str:
    return node.input[i] if node is not None and len(node.input) > i else ""


def _same_grid(v: GraphView, dq, dqp: _QParams, q, qp: _QParams) -> bool:
    """Same scale, same zero point and same integer type on both ends of a chain."""
    if not (np.array_equal(dqp.scale.reshape(()), qp.scale.reshape(())) and
            np.array_equal(dqp.zero.reshape(()), qp.zero.reshape(()))):
        return False
    x_type = _elem_type(v, dq.input[0])
    z_type = _elem_type(v, qp.zero_name) if qp.zero_name else onnx.TensorProto.UINT8
    return x_type is not None and x_type == z_type


def _elem_type(v: GraphView, name: str) -> int | None:
    for t in v.graph.initializer:
        if t.name == name:
            return t.data_type
    p = v.producer.get(name)
    if p is not None and p.op_type == _Q:
        if len(p.input) > 2 and p.input[2]:
            return _elem_type(v, p.input[2])
        return attr(p, "output_dtype", 0) or onnx.TensorProto.UINT8
    return None


def _input_type(v: GraphView, name: str) -> int | None:
    """Element type of a value that feeds a DequantizeLinear: an initializer, a Q output or a graph input."""
    t = _elem_type(v, name)
    if t is None:
        t = next((i.type.tensor_type.elem_type for i in v.graph.input if i.name == name), None)
    return t


def _value_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Shapes (ints, or names of symbolic dims) of the values ONNX shape inference can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001  (no shapes: the add rewrite is then skipped)
        return {}
    out = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") or d.HasField("dim_param") for d in t.shape.dim):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
    return out


def add_broadcast_mirrored(a_shape: list, b_shape: list) -> bool:
    """Whether the QLinearAdd lowering (:mod:`.ops.add`) sums in onnxruntime's order for these
    operand shapes: equal shapes, or a single-element operand."""
    return a_shape == b_shape or 1 in (numel(a_shape), numel(b_shape))


def numel(shape: list) -> int | None:
    """Element count of a shape of ints, None when a dimension is symbolic."""
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def prune(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop nodes whose outputs nobody reads (dead DequantizeLinear nodes after fusion)."""
    nodes = list(nodes)
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        alive = [n for n in nodes if any(o in used for o in n.output)]
        if len(alive) == len(nodes):
            return alive
        nodes = alive


def rewrite_qdq(model: onnx.ModelProto, requant: str) -> tuple[onnx.ModelProto, QdqReport]:
    """The model with its QDQ layers fused into integer ops, and what was (not) fused."""
    if requant not in REQUANT_MODES:
        raise ValueError(f"requant must be one of {REQUANT_MODES}, got {requant!r}")
    r = _Rewriter(model, requant)
    return r.run(), r.report


__all__ = ["COMMUTING", "add_broadcast_mirrored", "numel", "FUSED_DOMAIN", "GraphView", "QdqReport", "REQUANT_MODES", "attr", "prune", "rewrite_qdq"]
