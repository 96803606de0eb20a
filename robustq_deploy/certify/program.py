"""The integer program of an exported graph: the one object every bound in this package reads.

:func:`read_program` walks an ``integer`` or ``qdq`` ONNX graph in the numpy reference
interpreter's plan (:class:`~robustq_deploy.export.reference.ReferenceSession`: the same
constants, the same fused fixed-point requantization chains of
:func:`~robustq_deploy.export.requant.match_requantize`) and writes it as a short list of
integer steps:

* :class:`InputQuant`: the graph input's QuantizeLinear (after an optional float Clip), run by the
  reference kernel itself;
* :class:`Linear`: ``acc = W * q`` (ConvInteger / MatMulInteger, or a QDQ Conv / Gemm / MatMul
  whose input and weight are dequantized integers), exact in int64;
* :class:`AddConst`, :class:`Add`: int32 bias and residual adds;
* :class:`Requant`: ``clamp(round(acc * M), qmin, qmax)``: the fixed-point chain
  (``M = m0 * 2**-n``, half up, :func:`robustq_deploy.quant.fixed_point.requantize`) or, in QDQ
  graphs, a QuantizeLinear of a real value ``acc * scale`` (``M = scale / s_q``, rounding to the
  nearest level with either tie rule, since engines differ there);
* :class:`Clamp` (ReLU, Clip), :class:`MaxPool`, :class:`Reshape`, :class:`ReduceSum`,
  :class:`Sign` (BatchNorm + sign thresholds of binary layers);
* :class:`Output`: float logits ``acc * scale``.

Real values of a QDQ graph are held as ``ints * scale`` (the scale a per-element float64
array), so the float ops between its quantizers become integer steps on ``ints``; how far an
engine's float arithmetic may stray from that exact value is bounded by :mod:`.interval`
(``QDQ_REL``). :func:`run` executes a program on float inputs; the tests check it bit for bit
against the reference interpreter on ``integer`` graphs and within the rounding-deviation bound
on ``qdq`` graphs. Any operator or pattern outside this list raises one
:class:`~robustq_deploy.errors.UnsupportedError` naming all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import UnsupportedError
from ..export.reference import ReferenceSession, int_conv2d, int_matmul
from ..export.reference.intmath import wrap_int32
from ..export.reference.session import INT_RANGES
from ..export.requant import RequantMatch
from ..quant.fixed_point import requantize

# --------------------------------------------------------------------------- steps


@dataclass(eq=False)
class Step:
    out: str
    ins: tuple[str, ...]


@dataclass(eq=False)
class InputQuant(Step):
    """``q = QuantizeLinear(clip(x, lo, hi))`` of the float graph input, by the reference kernel."""

    node: onnx.NodeProto = None
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    clip: tuple[float, float] | None = None

    def quantize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.clip is not None:
            x = np.clip(x, np.float32(self.clip[0]), np.float32(self.clip[1]))
        values = {**self.consts, self.node.input[0]: x}
        types = dict(self.types)
        ReferenceSession._run_node(self.node, values, types)
        return values[self.node.output[0]].astype(np.int64)


@dataclass(eq=False)
class Linear(Step):
    """``acc = conv(q, W)`` or ``q @ W`` (``W`` int64 ``[K, M]``), exact."""

    kind: str = "conv"  # "conv" | "matmul"
    weight: np.ndarray = None
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1

    def apply(self, q: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
        w = self.weight if weight is None else weight
        if self.kind == "conv":
            return int_conv2d(q, w, self.strides, self.pads, self.dilations, self.group)
        return int_matmul(q, w)

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.weight.shape[1:])) if self.kind == "conv" else self.weight.shape[0]

    @property
    def fan_out(self) -> int:
        """Most terms one input element meets in the transposed product."""
        if self.kind == "conv":
            kh, kw = self.weight.shape[2:]
            return self.weight.shape[0] // self.group * kh * kw
        return self.weight.shape[1]


@dataclass(eq=False)
class AddConst(Step):
    const: np.ndarray = None  # int64, broadcast over the value (no batch axis)


@dataclass(eq=False)
class Add(Step):
    pass


@dataclass(eq=False)
class Requant(Step):
    """``clamp(round(acc * M), qmin, qmax)`` per element; ``m0``/``n`` set for the fixed-point
    chain (half up), ``mult`` (float64) for a QDQ QuantizeLinear (nearest, either tie)."""

    qmin: int = 0
    qmax: int = 255
    m0: np.ndarray | None = None
    n: np.ndarray | None = None
    mult: np.ndarray | None = None

    @property
    def fixed(self) -> bool:
        return self.m0 is not None

    @property
    def slope(self) -> np.ndarray:
        """``M`` as float64: exact for the fixed-point chain (``m0 < 2**31`` times a power of 2)."""
        return self.m0 * np.exp2(-self.n.astype(np.float64)) if self.fixed else self.mult


@dataclass(eq=False)
class Clamp(Step):
    lo: float = -np.inf
    hi: float = np.inf


@dataclass(eq=False)
class MaxPool(Step):
    node: onnx.NodeProto = None
    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def pool(self, x: np.ndarray) -> np.ndarray:
        values = {self.node.input[0]: np.asarray(x)}  # int64 levels, or a float64 deviation
        ReferenceSession._run_node(self.node, values, {})
        return values[self.node.output[0]]


@dataclass(eq=False)
class Reshape(Step):
    shape: tuple[int, ...] = ()


@dataclass(eq=False)
class ReduceSum(Step):
    axes: tuple[int, ...] = ()  # without the batch axis
    keepdims: bool = True


@dataclass(eq=False)
class Sign(Step):
    """``on`` where ``lo <= x <= hi`` (per element), ``off`` elsewhere."""

    lo: np.ndarray = None
    hi: np.ndarray = None
    on: int = 1
    off: int = -1


@dataclass(eq=False)
class Output(Step):
    """Float logits ``acc * scale`` (per element, float64 values of float32 scales)."""

    scale: np.ndarray = None


@dataclass
class Program:
    form: str  # "integer" or "qdq"
    input_name: str
    input_shape: tuple[int, ...]  # without the batch axis
    steps: list[Step]
    shapes: dict[str, tuple[int, ...]]  # IR value -> shape without the batch axis
    real_scale: dict[str, np.ndarray]  # IR values holding a QDQ real value ints * scale
    graph_names: dict[str, str]  # IR value -> the graph value holding the same numbers
    output: str = ""

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.shapes[self.output]))

    def producer(self) -> dict[str, Step]:
        return {s.out: s for s in self.steps}


# --------------------------------------------------------------------------- reading


@dataclass
class _Val:
    kind: str  # const | dqconst | float | ints | real | pred
    ir: str | None = None
    array: np.ndarray | None = None  # const value / dq levels
    scale: np.ndarray | None = None  # dq scale (dqconst) / per-element scale (real)
    axis: int = 1
    clip: tuple[float, float] | None = None  # pending float clip (float input, real before Q)
    lo: np.ndarray | None = None  # pred
    hi: np.ndarray | None = None
    dq_source: bool = False  # a real value straight from DequantizeLinear (uniform scale)


class _Reader:
    def __init__(self, model: onnx.ModelProto, form: str | None):
        self.sess = ReferenceSession(model)
        g = model.graph
        if len(self.sess.input_names) != 1 or len(self.sess.output_names) != 1:
            raise UnsupportedError("certify needs a model with one input and one output")
        self.input = self.sess.input_names[0]
        vin = next(v for v in g.input if v.name == self.input)
        dims = [d.dim_value for d in vin.type.tensor_type.shape.dim][1:]
        if not dims or any(d <= 0 for d in dims):
            raise UnsupportedError(f"input {self.input}: needs fixed non-batch dimensions, got {dims}")
        self.input_shape = tuple(dims)
        probe = self.sess.run_all({self.input: np.zeros((1, *dims), np.float32)})
        self.vshape = {k: tuple(np.shape(v))[1:] for k, v in probe.items()}
        self.types = dict(self.sess.types)
        self.types.update({k: helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype) for k, v in probe.items()
                           if k not in self.types})
        self.consumers: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.env: dict[str, _Val] = {k: _Val("const", array=v) for k, v in self.sess.consts.items()}
        self.env[self.input] = _Val("float")
        self.steps: list[Step] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.real_scale: dict[str, np.ndarray] = {}
        self.graph_names: dict[str, str] = {}
        self.problems: list[str] = []
        self.form = form

    # ------------------------------------------------------------------ helpers
    def emit(self, step: Step, graph_name: str) -> str:
        self.steps.append(step)
        self.shapes[step.out] = self.vshape[graph_name]
        self.graph_names[step.out] = graph_name
        return step.out

    @staticmethod
    def ints(name: str) -> _Val:
        return _Val("ints", ir=name)

    def real(self, ir: str, scale: np.ndarray, graph_name: str, dq_source: bool = False) -> _Val:
        full = np.broadcast_to(np.asarray(scale, np.float64), self.vshape[graph_name]).copy()
        if np.any(full <= 0):
            raise UnsupportedError(f"{graph_name}: non-positive quantization scale")
        self.real_scale[ir] = full
        return _Val("real", ir=ir, scale=full, dq_source=dq_source)

    def need(self, node: onnx.NodeProto, v: _Val, *kinds: str) -> None:
        if v.kind not in kinds:
            raise UnsupportedError(f"{node.name or node.op_type} ({node.op_type}): input of kind {v.kind}, "
                                   f"expected {' or '.join(kinds)}")

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default

    # ------------------------------------------------------------------ walk
    def read(self) -> Program:
        for step in self.sess._plan:
            try:
                if isinstance(step, RequantMatch):
                    self.requant_match(step)
                else:
                    self.node(step)
            except UnsupportedError as exc:
                self.problems.append(str(exc))
                for o in ([step.output] if isinstance(step, RequantMatch) else step.output):
                    self.env[o] = _Val("unsupported")
        out_name = self.sess.output_names[0]
        v = self.env.get(out_name)
        if not self.problems and (v is None or v.kind != "real"):
            self.problems.append(f"output {out_name}: not a dequantized integer value")
        if self.problems:
            seen = list(dict.fromkeys(p for p in self.problems if "input of kind unsupported" not in p))
            raise UnsupportedError("certify cannot read the graph: " + "; ".join(seen))
        out = self.emit(Output(f"{out_name}#out", (v.ir,), scale=v.scale), out_name)
        return Program(self.form or "integer", self.input, self.input_shape, self.steps, self.shapes,
                       self.real_scale, self.graph_names, out)

    def requant_match(self, m: RequantMatch) -> None:
        v = self.env[m.input]
        if v.kind != "ints":
            raise UnsupportedError(f"requantization of {m.input}: input is not an integer tensor")
        shape = self.vshape[m.output]
        rank = len(shape) + 1

        def per_element(a):
            a = np.asarray(a, np.int64)
            a = a.reshape(a.shape[1:]) if a.ndim == rank else a  # drop the batch axis of [1, C, 1, 1]
            return np.broadcast_to(a, shape).copy()
        step = Requant(m.output, (v.ir,), qmin=m.qmin, qmax=m.qmax, m0=per_element(m.m0), n=per_element(m.n))
        self.env[m.output] = self.ints(self.emit(step, m.output))

    def node(self, node: onnx.NodeProto) -> None:
        ins = [self.env.get(i) if i else None for i in node.input]
        op = node.op_type
        if all(v is None or v.kind == "const" for v in ins) and op not in ("QuantizeLinear", "DequantizeLinear"):
            values = {i: v.array for i, v in zip(node.input, ins) if v is not None}
            types = {i: self.types.get(i) for i in node.input if i}
            ReferenceSession._run_node(node, values, types)
            for o in node.output:
                if o:
                    self.env[o] = _Val("const", array=values[o])
                    self.types[o] = types.get(o, self.types.get(o))
            return
        handler = getattr(self, f"op_{op}", None)
        if handler is None or (node.domain not in ("", "ai.onnx")):
            raise UnsupportedError(f"{node.name or op}: operator {op} is not supported by certify")
        out = handler(node, ins)
        self.env[node.output[0]] = out

    # ------------------------------------------------------------------ operators
    def op_Identity(self, node, ins):
        return ins[0]

    def op_QuantizeLinear(self, node, ins):
        x = ins[0]
        zp = ins[2].array if len(ins) > 2 and ins[2] is not None else None
        if zp is not None and np.any(zp != 0):
            raise UnsupportedError(f"{node.name}: non-zero zero point")
        if ins[1].kind != "const" or (zp is not None and ins[2].kind != "const"):
            raise UnsupportedError(f"{node.name}: scale and zero point must be constants")
        out_type = self.types.get(node.output[0])
        if x.kind == "float":
            consts = {i: v.array for i, v in zip(node.input[1:], ins[1:]) if v is not None}
            step = InputQuant(node.output[0], (), node=node, consts=consts,
                              types={i: self.types.get(i) for i in node.input if i}, clip=x.clip)
            return self.ints(self.emit(step, node.output[0]))
        self.need(node, x, "real")
        s = np.asarray(ins[1].array, np.float32)
        if s.size != 1:
            raise UnsupportedError(f"{node.name}: per-axis QuantizeLinear of an activation")
        qmin, qmax = INT_RANGES[out_type]
        if x.clip is not None:  # Q(clip(t, a, b)) = clamp(Q(t), Q(a), Q(b)): Q is monotone
            qa, qb = (int(np.clip(np.rint(np.float32(c) / s.reshape(())), qmin, qmax)) for c in x.clip)
            qmin, qmax = max(qmin, qa), min(qmax, qb)
        step = Requant(node.output[0], (x.ir,), qmin=qmin, qmax=qmax,
                       mult=x.scale / np.float64(s.reshape(())))
        return self.ints(self.emit(step, node.output[0]))

    def op_DequantizeLinear(self, node, ins):
        x, s = ins[0], ins[1]
        zp = ins[2].array if len(ins) > 2 and ins[2] is not None else None
        if s.kind != "const" or (zp is not None and np.any(zp != 0)):
            raise UnsupportedError(f"{node.name}: needs a constant scale and zero point 0")
        axis = self.attr(node, "axis", 1)
        if x.kind == "const":
            return _Val("dqconst", array=np.asarray(x.array), scale=np.asarray(s.array, np.float32), axis=axis)
        self.need(node, x, "ints")
        scale = np.asarray(s.array, np.float64)
        shape = self.vshape[node.output[0]]
        if scale.size > 1:
            if axis % (len(shape) + 1) != 1:
                raise UnsupportedError(f"{node.name}: per-axis DequantizeLinear on axis {axis}")
            scale = scale.reshape((-1,) + (1,) * (len(shape) - 1))
        return self.real(x.ir, scale, node.output[0], dq_source=scale.size == 1)

    def _linear(self, node, x: _Val, kind: str, w: np.ndarray, **conv) -> str:
        step = Linear(node.output[0], (x.ir,), kind=kind,
                      weight=np.asarray(w, np.int64), **conv)
        return self.emit(step, node.output[0])

    def _conv_attrs(self, node) -> dict:
        if self.attr(node, "auto_pad", "NOTSET") != "NOTSET":
            raise UnsupportedError(f"{node.name}: auto_pad")
        return {"strides": tuple(self.attr(node, "strides", [1, 1])), "pads": tuple(self.attr(node, "pads", [0, 0, 0, 0])),
                "dilations": tuple(self.attr(node, "dilations", [1, 1])), "group": self.attr(node, "group", 1)}

    def _zero_points(self, node, ins, first: int) -> None:
        for v in ins[first:]:
            if v is not None and (v.kind != "const" or np.any(v.array != 0)):
                raise UnsupportedError(f"{node.name}: non-zero zero points")

    def op_ConvInteger(self, node, ins):
        self.need(node, ins[0], "ints")
        self.need(node, ins[1], "const")
        self._zero_points(node, ins, 2)
        ir = self._linear(node, ins[0], "conv", ins[1].array, **self._conv_attrs(node))
        return self.ints(ir)

    def op_MatMulInteger(self, node, ins):
        self.need(node, ins[0], "ints")
        self.need(node, ins[1], "const")
        self._zero_points(node, ins, 2)
        if np.ndim(ins[1].array) != 2:
            raise UnsupportedError(f"{node.name}: MatMulInteger weight must be a matrix")
        return self.ints(self._linear(node, ins[0], "matmul", ins[1].array))

    def _qdq_layer(self, node, x: _Val, w: _Val, b: _Val | None, kind: str, weight: np.ndarray, out_axis: int,
                   **conv) -> _Val:
        """A float layer on a dequantized input and weight: integer product, real scale."""
        self.need(node, x, "real")
        self.need(node, w, "dqconst")
        if not x.dq_source or x.clip is not None:
            raise UnsupportedError(f"{node.name}: input is not a dequantized integer tensor (a float layer)")
        sx = float(x.scale.reshape(-1)[0])
        sw = np.asarray(w.scale, np.float64).reshape(-1)
        if sw.size > 1 and w.axis % np.ndim(w.array) != out_axis:
            raise UnsupportedError(f"{node.name}: weights are not quantized per output channel")
        acc_scale = sx * sw  # exact: a product of two float32 values in float64
        ir = self._linear(node, x, kind, weight, **conv)
        cur = ir
        shape = self.vshape[node.output[0]]
        if b is not None:
            del self.graph_names[ir]  # the graph value holds the biased sum; the bias step maps to it
            self.need(node, b, "dqconst")
            bias = np.asarray(b.array)
            if bias.dtype != np.int32:
                raise UnsupportedError(f"{node.name}: bias is not int32 behind DequantizeLinear")
            sb = np.asarray(b.scale, np.float64).reshape(-1)
            # engines add bias * sb; the program adds bias on the acc grid sx * sw: the difference
            # is a float32 rounding of sx * sw, at most 2**-24 relative, inside the QDQ deviation bound
            if np.any(np.abs(np.broadcast_to(sb, acc_scale.shape) - acc_scale) > acc_scale * 2.0**-23):
                raise UnsupportedError(f"{node.name}: bias scale differs from x_scale * w_scale")
            cshape = (-1,) + (1,) * (len(shape) - 1)
            step = AddConst(f"{node.output[0]}#bias", (ir,), const=bias.astype(np.int64).reshape(cshape))
            cur = self.emit(step, node.output[0])
        cshape = (-1,) + (1,) * (len(shape) - 1) if acc_scale.size > 1 else ()
        return self.real(cur, acc_scale.reshape(cshape), node.output[0])

    def op_Conv(self, node, ins):
        w = ins[1]
        self.need(node, w, "dqconst")
        return self._qdq_layer(node, ins[0], w, ins[2] if len(ins) > 2 else None, "conv", w.array, 0,
                               **self._conv_attrs(node))

    def op_Gemm(self, node, ins):
        if self.attr(node, "transA", 0) or self.attr(node, "alpha", 1.0) != 1.0 or self.attr(node, "beta", 1.0) != 1.0:
            raise UnsupportedError(f"{node.name}: Gemm with transA, alpha or beta")
        w = ins[1]
        self.need(node, w, "dqconst")
        trans = self.attr(node, "transB", 0)
        weight = np.asarray(w.array).T if trans else np.asarray(w.array)
        return self._qdq_layer(node, ins[0], w, ins[2] if len(ins) > 2 else None, "matmul", weight, 0 if trans else 1)

    def op_MatMul(self, node, ins):
        w = ins[1]
        self.need(node, w, "dqconst")
        if np.ndim(w.array) != 2:
            raise UnsupportedError(f"{node.name}: MatMul weight must be a matrix")
        return self._qdq_layer(node, ins[0], w, None, "matmul", w.array, 1)

    def op_Add(self, node, ins):
        a, b = ins
        if a.kind == "const":
            a, b = b, a
        if a.kind == "ints" and b.kind == "const":
            c = np.asarray(b.array, np.int64)
            c = c.reshape(c.shape[1:]) if c.ndim == len(self.vshape[node.output[0]]) + 1 else c
            return self.ints(self.emit(AddConst(node.output[0], (a.ir,), const=c), node.output[0]))
        if a.kind == "ints" and b.kind == "ints":
            return self.ints(self.emit(Add(node.output[0], (a.ir, b.ir)), node.output[0]))
        raise UnsupportedError(f"{node.name}: Add of {a.kind} and {b.kind}")

    def op_Cast(self, node, ins):
        x = ins[0]
        to = self.attr(node, "to")
        if x.kind == "ints" and to in (TensorProto.INT32, TensorProto.INT64):
            return x  # widening: the program holds every integer exactly
        raise UnsupportedError(f"{node.name}: Cast of {x.kind} to ONNX type {to}")

    def op_Clip(self, node, ins):
        x = ins[0]
        lo = float(ins[1].array) if len(ins) > 1 and ins[1] is not None else -np.inf
        hi = float(ins[2].array) if len(ins) > 2 and ins[2] is not None else np.inf
        if any(v is not None and v.kind != "const" for v in ins[1:]):
            raise UnsupportedError(f"{node.name}: Clip bounds must be constants")
        if x.kind == "ints":
            return self.ints(self.emit(Clamp(node.output[0], (x.ir,), lo=lo, hi=hi), node.output[0]))
        if x.kind in ("float", "real"):
            a, b = x.clip or (-np.inf, np.inf)
            return _Val(x.kind, ir=x.ir, scale=x.scale, clip=(max(a, lo), min(b, hi)))
        raise UnsupportedError(f"{node.name}: Clip of {x.kind}")

    def op_Relu(self, node, ins):
        x = ins[0]
        if x.kind not in ("ints", "real") or x.clip is not None:
            raise UnsupportedError(f"{node.name}: Relu of {x.kind}")
        ir = self.emit(Clamp(node.output[0], (x.ir,), lo=0.0), node.output[0])
        return self.ints(ir) if x.kind == "ints" else self.real(ir, x.scale, node.output[0])

    def op_MaxPool(self, node, ins):
        x = ins[0]
        if x.kind not in ("ints", "real") or x.clip is not None:
            raise UnsupportedError(f"{node.name}: MaxPool of {x.kind}")
        if len(node.output) > 1 and node.output[1]:
            raise UnsupportedError(f"{node.name}: MaxPool with indices")
        if self.attr(node, "ceil_mode", 0) or any(d != 1 for d in self.attr(node, "dilations", [1, 1])):
            raise UnsupportedError(f"{node.name}: MaxPool with ceil_mode or dilation")
        if x.kind == "real" and np.any(x.scale != x.scale[:, :1, :1]):
            raise UnsupportedError(f"{node.name}: MaxPool of a value whose scale varies inside a channel")
        step = MaxPool(node.output[0], (x.ir,), node=node, kernel=tuple(self.attr(node, "kernel_shape")),
                       strides=tuple(self.attr(node, "strides", [1, 1])), pads=tuple(self.attr(node, "pads", [0, 0, 0, 0])))
        ir = self.emit(step, node.output[0])
        if x.kind == "ints":
            return self.ints(ir)
        return self.real(ir, x.scale[:, :1, :1], node.output[0])

    def _reshape(self, node, x: _Val) -> _Val:
        if x.kind not in ("ints", "real") or x.clip is not None:
            raise UnsupportedError(f"{node.name}: {node.op_type} of {x.kind}")
        shape = self.vshape[node.output[0]]
        ir = self.emit(Reshape(node.output[0], (x.ir,), shape=shape), node.output[0])
        if x.kind == "ints":
            return self.ints(ir)
        v = self.real(ir, x.scale.reshape(shape), node.output[0])
        v.dq_source = x.dq_source and np.all(x.scale == x.scale.reshape(-1)[0])
        return v

    def op_Flatten(self, node, ins):
        if self.attr(node, "axis", 1) != 1:
            raise UnsupportedError(f"{node.name}: Flatten on an axis other than 1")
        return self._reshape(node, ins[0])

    def op_Reshape(self, node, ins):
        return self._reshape(node, ins[0])

    def op_ReduceSum(self, node, ins):
        x = ins[0]
        self.need(node, x, "ints")
        axes = ins[1].array if len(ins) > 1 and ins[1] is not None else None
        rank = len(self.shapes[x.ir]) + 1
        if axes is None or len(axes) == 0 or any(int(a) % rank == 0 for a in axes):
            raise UnsupportedError(f"{node.name}: ReduceSum over the batch axis")
        step = ReduceSum(node.output[0], (x.ir,), axes=tuple(sorted(int(a) % rank - 1 for a in axes)),
                         keepdims=bool(self.attr(node, "keepdims", 1)))
        return self.ints(self.emit(step, node.output[0]))

    def _pred(self, node, ins, side: str) -> _Val:
        x, c = ins
        self.need(node, x, "ints")
        self.need(node, c, "const")
        shape = self.vshape[node.input[0]]
        arr = np.asarray(c.array, np.float64)
        arr = arr.reshape(arr.shape[1:]) if arr.ndim == len(shape) + 1 else arr
        t = np.broadcast_to(arr, shape).copy()
        inf = np.full(shape, np.inf)
        return _Val("pred", ir=x.ir, lo=t if side == "lo" else -inf, hi=t if side == "hi" else inf)

    def op_GreaterOrEqual(self, node, ins):
        return self._pred(node, ins, "lo")

    def op_LessOrEqual(self, node, ins):
        return self._pred(node, ins, "hi")

    def op_And(self, node, ins):
        a, b = ins
        if a.kind != "pred" or b.kind != "pred" or a.ir != b.ir:
            raise UnsupportedError(f"{node.name}: And of anything but two thresholds of one tensor")
        return _Val("pred", ir=a.ir, lo=np.maximum(a.lo, b.lo), hi=np.minimum(a.hi, b.hi))

    def op_Where(self, node, ins):
        c, a, b = ins
        if c.kind != "pred" or a.kind != "const" or b.kind != "const" or np.size(a.array) != 1 or np.size(b.array) != 1:
            raise UnsupportedError(f"{node.name}: Where other than a threshold between two constants")
        step = Sign(node.output[0], (c.ir,), lo=c.lo, hi=c.hi, on=int(a.array), off=int(b.array))
        return self.ints(self.emit(step, node.output[0]))


def read_program(model: onnx.ModelProto | str | Path) -> Program:
    """The integer program of an ``integer`` or ``qdq`` graph (form detected from its ops)."""
    if not isinstance(model, onnx.ModelProto):
        model = ReferenceSession(model).model
    ops = {n.op_type for n in model.graph.node}
    form = "qdq" if ops & {"Conv", "Gemm", "MatMul"} else "integer"
    return _Reader(model, form).read()


# --------------------------------------------------------------------------- execution


def run(program: Program, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every value of ``program`` on float inputs ``x`` ([N, ...]); the output as float32 logits.

    Integer steps are exact (int32 values of ``integer`` graphs wrap as the engines'); a QDQ :class:`Requant` rounds ``acc * M`` half to even and the
    output is ``float32(acc * scale)``: the exact real semantics that QDQ engines approximate."""
    vals: dict[str, np.ndarray] = {}
    for s in program.steps:
        a = vals[s.ins[0]] if s.ins else None
        if isinstance(s, InputQuant):
            y = s.quantize(x)
        elif isinstance(s, Linear):
            y = s.apply(a)
        elif isinstance(s, AddConst):
            y = a + s.const
        elif isinstance(s, Add):
            y = a + vals[s.ins[1]]
        elif isinstance(s, Requant):
            y = (requantize(a, s.m0, s.n, 0, s.qmin, s.qmax) if s.fixed
                 else np.clip(np.rint(a * s.mult), s.qmin, s.qmax).astype(np.int64))
        elif isinstance(s, Clamp):
            y = np.clip(a, s.lo, s.hi).astype(np.int64)
        elif isinstance(s, MaxPool):
            y = s.pool(a)
        elif isinstance(s, Reshape):
            y = a.reshape((len(a), *s.shape))
        elif isinstance(s, ReduceSum):
            y = a.sum(axis=tuple(i + 1 for i in s.axes), keepdims=s.keepdims)
        elif isinstance(s, Sign):
            y = np.where((a >= s.lo) & (a <= s.hi), s.on, s.off).astype(np.int64)
        elif isinstance(s, Output):  # DequantizeLinear's float32(acc) * float32(scale)
            y = np.multiply(a.astype(np.float32), s.scale.astype(np.float32), dtype=np.float32)
        else:  # pragma: no cover - every step type is listed above
            raise TypeError(type(s).__name__)
        if program.form == "integer" and isinstance(s, (Linear, AddConst, Add, ReduceSum)):
            y = wrap_int32(y).astype(np.int64)  # int32 tensors of the graph wrap in two's complement
        vals[s.out] = y
    return vals


__all__ = ["Add", "AddConst", "Clamp", "InputQuant", "Linear", "MaxPool", "Output", "Program", "ReduceSum", "Requant",
           "Reshape", "Sign", "Step", "read_program", "run"]
