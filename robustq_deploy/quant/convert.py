"""Turn an ordinary float PyTorch model into the project's quantized twin, by graph transformation.

:func:`quantize` traces the model with ``torch.fx``, checks the whole graph first (:func:`scan`:
one :class:`~robustq_deploy.errors.UnsupportedError` naming every unsupported module, function or
pattern with its module name, before anything is changed) and rewrites it:

===============================================  ===================================================
float model                                       quantized twin
===============================================  ===================================================
``nn.Conv2d`` (any groups, stride, padding,       :class:`~.modules.QConv2d`
dilation; zero padding)
``nn.Conv2d`` -> ``nn.BatchNorm2d``               :class:`~.modules.QConvBn2d` (conv-bn QAT, folded
                                                  at export)
``nn.Linear``                                     :class:`~.modules.QLinear`
ReLU (module, function, method)                   kept (the consumer's clamp at zero)
ReLU6, hardtanh, ``clamp(a, b)``                  ``F.hardtanh(x, a, b)`` (the consumer's clamp)
``a + b``, ``torch.add``, ``+=``                  :class:`~.modules.QAdd` (one shared grid)
``torch.cat``                                     :class:`~.modules.QConcat` (one shared grid)
max pooling                                       kept (commutes with requantization)
average pooling, global average pooling           :class:`~.modules.QAvgPool2d` (integer window sum)
(``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d(1)``,
``x.mean((2, 3))`` ...)
``flatten``, ``view`` / ``reshape`` /             ``torch.flatten(x, 1)``
``squeeze`` to ``[N, features]``
``nn.Dropout``, ``nn.Identity``, ``contiguous``   removed
===============================================  ===================================================

Every quantized layer owns the quantizer of its input (docs/architecture.md): a layer reading the
model input gets the uint8 pixel grid (scale 1/255); any other input grid is unsigned when the
value is provably non-negative (after a ReLU, a clamp at or above zero, pooling or adds of such
values) and signed narrow otherwise. Bits and granularity come from the ``[quant]`` spec,
overridden per layer by ``[quant.layers."MODULE.NAME"]``, NAME being the module path of the
layer in the float model (``features.3.conv``; a residual add gets ``<its module>.add``, a
concatenation ``<its module>.cat``, an average pool of a function ``<its module>.avgpool``).

The twin is an ``fx.GraphModule`` whose state dict is a function of the float model's structure
alone, so the same factory and spec always rebuild a module that loads a checkpoint of it.
To support another op: add it to the tables below (what it is, how the scan checks it, how the
rewrite maps it) and give the export forms a handler for what it becomes.
"""
from __future__ import annotations

import contextlib
import copy
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..config import QuantConfig
from ..errors import ConfigError, UnsupportedError
from .modules import QAdd, QAvgPool2d, QConcat, QConv2d, QConvBn2d, QLinear
from .spec import FLOAT_BITS, LayerSpec, layer_spec

PIXEL_SCALE = 1.0 / 255.0
_PROBE_BATCH = 2  # batch of the shape probe

# ----------------------------------------------------------------------------- op families

_RELU_FNS = (torch.relu, F.relu, torch.relu_)
_RELU_METHODS = ("relu", "relu_")
_CLAMP_FNS = (F.relu6, F.hardtanh, torch.clamp, torch.clip, torch.clamp_)
_CLAMP_METHODS = ("clamp", "clip", "clamp_", "clip_")
_MAXPOOL_FNS = (F.max_pool2d, torch.max_pool2d)
_FLATTEN_FNS = (torch.flatten, torch.reshape, torch.squeeze)
_SHAPE_METHODS = ("view", "reshape", "flatten", "squeeze")
_ADD_FNS = (operator.add, operator.iadd, torch.add)
_CAT_FNS = (torch.cat, torch.concat, torch.concatenate)
_DROP_FNS = (F.dropout, F.dropout2d, torch.dropout, F.alpha_dropout)
_DROP_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_SIZE_METHODS = ("size", "dim")  # only as arguments of reshapes, dropped with them


class _AutogradCall:
    """Node target standing for a custom ``torch.autograd.Function`` (kept opaque by the tracer
    so the scan can name it; its forward is never inlined into the twin)."""

    def __init__(self, fn: type):
        self.fn = fn
        self.__name__ = f"{fn.__qualname__}.apply"

    def __call__(self, *args, **kwargs):
        return self.fn.apply(*args, **kwargs)


class _Tracer(fx.Tracer):
    """fx tracer that keeps ``torch.nn`` modules as leaves (fx's default), records custom
    autograd functions as opaque calls, and remembers which module a trace failure happened in."""

    def __init__(self):
        super().__init__()
        self.failed_in: str | None = None

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.path_of_module(m)
            raise

    @contextlib.contextmanager
    def _opaque_autograd(self) -> Iterator[None]:
        original = torch.autograd.Function.__dict__["apply"]
        tracer = self

        def apply(cls, *args, **kwargs):
            if any(isinstance(a, fx.Proxy) for a in (*args, *kwargs.values())):
                return tracer.create_proxy("call_function", _AutogradCall(cls), args, kwargs)
            return original.__get__(None, cls)(*args, **kwargs)

        torch.autograd.Function.apply = classmethod(apply)
        try:
            yield
        finally:
            torch.autograd.Function.apply = original

    def trace(self, root, concrete_args=None):
        with self._opaque_autograd():
            return super().trace(root, concrete_args)


def trace_float(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model``; a model fx cannot trace is a one-line UnsupportedError."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError ... on untraceable code
        where = f" in {tracer.failed_in}" if tracer.failed_in else ""
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedError(f"cannot quantize the model: torch.fx cannot trace it{where} ({first}); "
                               "data-dependent control flow and Python-side tensor logic are not supported") from None
    return fx.GraphModule(model, graph)


# ----------------------------------------------------------------------------- reading nodes


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def owner(node: fx.Node) -> str:
    """Module path a node belongs to (the innermost module whose forward made it; '' for the root)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    return str(list(stack.values())[-1][0])


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    """How problems name a node: ``blocks.0.act (GELU)``, ``blocks.1: torch.sigmoid``."""
    if node.op == "call_module":
        return f"{node.target} ({type(gm.get_submodule(node.target)).__name__})"
    where = owner(node) or "(model)"
    if node.op == "call_method":
        what = f"Tensor.{node.target}"
    elif isinstance(node.target, _AutogradCall):
        what = f"custom autograd function {node.target.__name__}"
    else:
        t = node.target
        what = f"{getattr(t, '__module__', None) or ''}.{getattr(t, '__name__', str(t))}".lstrip(".")
        what = what.replace("torch._C._nn.", "torch.nn.functional.").replace("_operator.", "operator.")
    return f"{where}: {what}"


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _const_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def clamp_bounds(gm: fx.GraphModule, node: fx.Node) -> tuple[float, float] | None:
    """(lo, hi) of a ReLU / ReLU6 / hardtanh / clamp node (None: not one, or bounds not constant)."""
    m = _module(gm, node)
    if m is not None:
        if isinstance(m, nn.ReLU):
            return 0.0, math.inf
        if isinstance(m, nn.ReLU6):
            return 0.0, 6.0
        if isinstance(m, nn.Hardtanh):
            return float(m.min_val), float(m.max_val)
        return None
    t = node.target
    if (node.op == "call_function" and t in _RELU_FNS) or (node.op == "call_method" and t in _RELU_METHODS):
        return 0.0, math.inf
    if node.op == "call_function" and t is F.relu6:
        return 0.0, 6.0
    if node.op == "call_function" and t is F.hardtanh:
        lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
    elif (node.op == "call_function" and t in (torch.clamp, torch.clip, torch.clamp_)) or (
            node.op == "call_method" and t in _CLAMP_METHODS):
        lo, hi = _arg(node, 1, "min"), _arg(node, 2, "max")
        lo = -math.inf if lo is None else lo
        hi = math.inf if hi is None else hi
    else:
        return None
    if not (_const_number(lo) and _const_number(hi)) or lo > hi:
        return None
    return float(lo), float(hi)


def _is_clamp_like(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = _module(gm, node)
    if m is not None:
        return isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardtanh))
    t = node.target
    return (node.op == "call_function" and t in (*_RELU_FNS, *_CLAMP_FNS)) or (
        node.op == "call_method" and t in (*_RELU_METHODS, *_CLAMP_METHODS))


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- classification


@dataclass
class _Op:
    """What a node of the float graph is, for the scan and the rewrite."""

    kind: str  # conv, linear, bn, clamp, maxpool, avgpool, flatten, add, cat, drop, size, input, output
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _avgpool_fn(node: fx.Node) -> dict | None:
    """Geometry of an average-pooling call (None: not one we can read)."""
    t = node.target
    if node.op == "call_function" and t in (F.avg_pool2d, torch._C._nn.avg_pool2d):
        k = _arg(node, 1, "kernel_size")
        s = _arg(node, 2, "stride", None) or k
        return {"kernel_size": k, "stride": s, "padding": _arg(node, 3, "padding", 0),
                "ceil_mode": _arg(node, 4, "ceil_mode", False), "count_include_pad": _arg(node, 5, "count_include_pad", True),
                "divisor": _arg(node, 6, "divisor_override", None)}
    if node.op == "call_function" and t is F.adaptive_avg_pool2d:
        return {"output_size": _arg(node, 1, "output_size"), "keepdim": True}
    if (node.op == "call_function" and t is torch.mean) or (node.op == "call_method" and t == "mean"):
        return {"dims": _arg(node, 1, "dim"), "keepdim": bool(_arg(node, 2, "keepdim", False))}
    return None


def _classify(gm: fx.GraphModule, node: fx.Node) -> _Op:
    op, t = node.op, node.target
    if op == "placeholder":
        return _Op("input")
    if op == "output":
        return _Op("output")
    m = _module(gm, node)
    if m is not None:
        return _classify_module(node, m)
    if _is_clamp_like(gm, node):
        b = clamp_bounds(gm, node)
        return _Op("clamp", [] if b is not None else [f"{describe(gm, node)}: clamp bounds must be constants"],
                   {"bounds": b})
    if op == "call_function" and isinstance(t, _AutogradCall):
        return _Op("unsupported", [f"{describe(gm, node)}: not supported (its forward and backward are opaque to "
                                   "the quantizer and the exporters)"])
    if (op == "call_function" and t in _MAXPOOL_FNS):
        problems = []
        if _arg(node, 4, "dilation", 1) not in (1, (1, 1), [1, 1]) or _arg(node, 5, "ceil_mode", False) or \
                _arg(node, 6, "return_indices", False):
            problems.append(f"{describe(gm, node)}: max pooling with dilation, ceil_mode or indices is not supported")
        return _Op("maxpool", problems)
    geo = _avgpool_fn(node)
    if geo is not None:
        return _avgpool_op(gm, node, geo)
    if (op == "call_function" and t in _FLATTEN_FNS) or (op == "call_method" and t in _SHAPE_METHODS):
        return _flatten_op(gm, node)
    if (op == "call_function" and t in _DROP_FNS) or (op == "call_method" and t == "contiguous"):
        return _Op("drop")
    if op == "call_method" and t in _SIZE_METHODS or (op == "call_function" and t is getattr) or (
            op == "call_function" and t is operator.getitem and _is_size(node.args[0])):
        return _Op("size")
    if (op == "call_function" and t in _ADD_FNS) or (op == "call_method" and t in ("add", "add_")):
        a, b = _arg(node, 0, "input"), _arg(node, 1, "other")
        problems = []
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or node.kwargs.get("alpha", 1) != 1:
            problems.append(f"{describe(gm, node)}: only the sum of two tensors is supported (no constants, no alpha)")
        elif _shape(a) != _shape(b):
            problems.append(f"{describe(gm, node)}: adds tensors of shapes {_shape(a)} and {_shape(b)} "
                            "(broadcasting is not supported)")
        return _Op("add", problems)
    if op == "call_function" and t in _CAT_FNS:
        xs = _arg(node, 0, "tensors")
        dim = _arg(node, 1, "dim", 0)
        ok = isinstance(xs, (list, tuple)) and xs and all(isinstance(x, fx.Node) for x in xs) and isinstance(dim, int)
        return _Op("cat", [] if ok else [f"{describe(gm, node)}: only a concatenation of tensors along a constant dim"],
                   {"dim": dim})
    return _Op("unsupported", [f"{describe(gm, node)}: not supported"])


def _is_size(n: Any) -> bool:
    return isinstance(n, fx.Node) and (
        (n.op == "call_method" and n.target in _SIZE_METHODS) or (n.op == "call_function" and n.target is getattr))


def _classify_module(node: fx.Node, m: nn.Module) -> _Op:
    name = f"{node.target} ({type(m).__name__})"
    if type(m) is nn.Conv2d:
        problems = []
        if m.padding_mode != "zeros":
            problems.append(f"{name}: padding_mode {m.padding_mode!r} is not supported (zeros only)")
        if isinstance(m.padding, str) and _string_padding(m) is None:
            problems.append(f"{name}: padding {m.padding!r} is not symmetric here; give explicit padding")
        return _Op("conv", problems)
    if type(m) is nn.Linear:
        problems = [] if len(_shape(node.args[0]) or ()) == 2 else [
            f"{name}: input of shape {list(_shape(node.args[0]) or ())} (only [N, features] is supported)"]
        return _Op("linear", problems)
    if type(m) is nn.BatchNorm2d:
        return _Op("bn", [] if m.track_running_stats else [f"{name}: BatchNorm without running statistics cannot "
                                                           "be folded"])
    if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardtanh)):
        return _Op("clamp")
    if type(m) is nn.MaxPool2d:
        ok = not m.ceil_mode and _pair(m.dilation) == (1, 1) and not m.return_indices
        return _Op("maxpool", [] if ok else [f"{name}: max pooling with ceil_mode, dilation or indices is not supported"])
    if type(m) is nn.AvgPool2d:
        return _avgpool_op(None, node, {"kernel_size": m.kernel_size, "stride": m.stride or m.kernel_size,
                                        "padding": m.padding, "ceil_mode": m.ceil_mode,
                                        "count_include_pad": m.count_include_pad, "divisor": m.divisor_override},
                           label=name)
    if type(m) is nn.AdaptiveAvgPool2d:
        return _avgpool_op(None, node, {"output_size": m.output_size, "keepdim": True}, label=name)
    if type(m) is nn.Flatten:
        ok = m.start_dim == 1 and m.end_dim == -1
        return _Op("flatten", [] if ok else [f"{name}: flatten({m.start_dim}, {m.end_dim}) (only 1..-1 is supported)"])
    if isinstance(m, _DROP_MODULES):
        return _Op("drop")
    return _Op("unsupported", [f"{name}: not supported"])


def _string_padding(m: nn.Conv2d) -> tuple[int, int] | None:
    """Explicit padding of ``padding='valid'`` / ``'same'`` (None: 'same' would be asymmetric)."""
    if m.padding == "valid":
        return 0, 0
    pads = []
    for k, d in zip(_pair(m.kernel_size), _pair(m.dilation)):
        total = d * (k - 1)
        if total % 2:
            return None
        pads.append(total // 2)
    return pads[0], pads[1]


def _avgpool_op(gm, node: fx.Node, geo: dict, label: str | None = None) -> _Op:
    label = label or describe(gm, node)
    src = _shape(node.args[0])
    out = _shape(node)
    if "output_size" in geo:
        size = geo["output_size"]
        if _pair(size) != (1, 1):
            return _Op("avgpool", [f"{label}: adaptive average pooling to {size} (only output size 1 is supported)"])
        return _Op("avgpool", [], {"global": True, "keepdim": True})
    if "dims" in geo:
        dims = geo["dims"]
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        rank = len(src or ())
        if rank != 4 or sorted(d % rank for d in dims) != [2, 3]:
            return _Op("avgpool", [f"{label}: mean over dims {list(dims)} (only the spatial mean of [N, C, H, W])"])
        return _Op("avgpool", [], {"global": True, "keepdim": geo["keepdim"]})
    k, s, p = _pair(geo["kernel_size"]), _pair(geo["stride"]), _pair(geo["padding"])
    problems = []
    if geo["ceil_mode"]:
        problems.append(f"{label}: average pooling with ceil_mode is not supported")
    if any(p) and not geo["count_include_pad"]:
        problems.append(f"{label}: average pooling of padded windows without count_include_pad is not supported")
    if geo["divisor"] is not None:
        problems.append(f"{label}: average pooling with divisor_override is not supported")
    if src is not None and out is not None and tuple(out[2:]) == (1, 1) and tuple(src[2:]) == k and not any(p):
        return _Op("avgpool", problems, {"global": True, "keepdim": True})
    return _Op("avgpool", problems, {"global": False, "kernel_size": k, "stride": s, "padding": p})


def _flatten_op(gm, node: fx.Node) -> _Op:
    src, out = _shape(node.args[0]), _shape(node)
    if src is not None and out is not None and len(src) >= 2 and len(out) == 2 and out[0] == src[0] \
            and out[1] == math.prod(src[1:]):
        return _Op("flatten")
    return _Op("flatten", [f"{describe(gm, node)}: reshapes {list(src or ())} to {list(out or ())} "
                           "(only flattening to [N, features] is supported)"])


# ----------------------------------------------------------------------------- the scan


@dataclass
class _Analysis:
    gm: fx.GraphModule
    ops: dict[fx.Node, _Op]
    problems: list[str]
    bn_of: dict[fx.Node, fx.Node]  # conv node -> its BatchNorm node
    num_classes: int | None


def _through(ops: dict[fx.Node, _Op], node: Any, kinds: tuple[str, ...]) -> Any:
    """Walk back from ``node`` through nodes of the given kinds."""
    while isinstance(node, fx.Node) and ops[node].kind in kinds:
        node = node.args[0]
    return node


def _analyse(model: nn.Module, input_shape: tuple[int, ...]) -> _Analysis:
    gm = trace_float(model)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedError(f"cannot quantize the model: forward takes {len(placeholders)} inputs (one image batch "
                               "is supported)")
    probe = copy.deepcopy(gm).eval()
    try:
        with torch.no_grad():
            ShapeProp(probe).propagate(torch.zeros(_PROBE_BATCH, *input_shape))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"the model does not run on inputs of shape [N, {', '.join(map(str, input_shape))}] "
                          f"({first})") from None
    for n, p in zip(gm.graph.nodes, probe.graph.nodes):
        if "tensor_meta" in p.meta:
            n.meta["tensor_meta"] = p.meta["tensor_meta"]
    ops = {n: _classify(gm, n) for n in gm.graph.nodes}
    problems = [p for op in ops.values() for p in op.problems]
    bn_of: dict[fx.Node, fx.Node] = {}
    calls: dict[str, int] = {}
    for n, op in ops.items():
        if op.kind in ("conv", "linear", "bn"):
            calls[n.target] = calls.get(n.target, 0) + 1
        if op.kind == "bn":
            src = n.args[0]
            if isinstance(src, fx.Node) and ops[src].kind == "conv" and len(src.users) == 1:
                bn_of[src] = n
            else:
                problems.append(f"{describe(gm, n)}: BatchNorm2d must directly follow a Conv2d whose output "
                                "nothing else reads (it is folded into that convolution)")
        if op.kind in ("maxpool", "avgpool", "flatten", "clamp", "drop", "add", "cat", "conv", "linear", "bn"):
            ins = [a for a in n.all_input_nodes if ops[a].kind != "size"]
            if any(ops[_through(ops, a, ("drop", "flatten"))].kind == "input" for a in ins) and \
                    op.kind not in ("conv", "linear", "drop", "flatten"):
                problems.append(f"{describe(gm, n)}: reads the float model input; the input must feed "
                                "convolutions or linear layers (through flatten or reshape only)")
    for target, count in calls.items():
        if count > 1:
            problems.append(f"{target} ({type(gm.get_submodule(target)).__name__}): called {count} times; "
                            "a quantized layer owns one input grid, so give each call its own module")
    out = next(n for n in gm.graph.nodes if n.op == "output")
    (res,) = out.args
    num_classes = None
    if not isinstance(res, fx.Node):
        problems.append("model output: must be one tensor (not a tuple, list or dict)")
    else:
        src = _through(ops, res, ("drop", "flatten"))
        kind = ops[src].kind if isinstance(src, fx.Node) else "constant"
        if kind in ("maxpool", "clamp") and not (kind == "clamp" and clamp_bounds(gm, src) == (0.0, math.inf)):
            problems.append(f"{describe(gm, src)}: a {'max pool' if kind == 'maxpool' else 'clamp other than ReLU'} "
                            "right before the model output is not supported (the output is the int32 accumulator)")
        elif kind in ("input", "constant"):
            problems.append("model output: must be computed by the model's layers")
        shape = _shape(res)
        if shape is not None and len(shape) == 2:
            num_classes = int(shape[1])
        elif shape is not None:
            problems.append(f"model output: shape {list(shape)} (a classifier outputs [N, classes])")
    return _Analysis(gm, ops, problems, bn_of, num_classes)


def _raise(problems: list[str]) -> None:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p] = counts.get(p, 0) + 1
    listed = [p if n == 1 else f"{p} (x{n})" for p, n in counts.items()]
    raise UnsupportedError(f"cannot quantize the model, {len(counts)} problem(s): " + "; ".join(listed))


def scan(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Every module, function and pattern of ``model`` that :func:`quantize` cannot convert (empty:
    it can); ``input_shape`` is one image, ``(C, H, W)``."""
    return _analyse(model, tuple(input_shape)).problems


# ----------------------------------------------------------------------------- the rewrite


class _Rewrite:
    def __init__(self, a: _Analysis, spec: QuantConfig, input_shape: tuple[int, ...]):
        self.a, self.gm, self.ops, self.spec = a, a.gm, a.ops, spec
        self.graph = a.gm.graph
        self.input_shape = input_shape
        self.names: list[str] = []  # quantized layers, for the [quant.layers] check
        self.taken: set[str] = {n for n, _ in self.gm.named_modules()}
        memo: dict = {}
        self.nonneg_of = {n: self._nonneg(n, memo) for n in self.graph.nodes}  # of the float graph

    # -------------------------------------------------------------- helpers
    def _nonneg(self, node: Any, memo: dict) -> bool:
        """Whether ``node``'s value is provably >= 0 (so its grid can be unsigned)."""
        if not isinstance(node, fx.Node):
            return False
        if node in memo:
            return memo[node]
        kind = self.ops[node].kind
        if kind == "input":
            v = True
        elif kind == "clamp":
            v = clamp_bounds(self.gm, node)[0] >= 0 or self._nonneg(node.args[0], memo)
        elif kind in ("maxpool", "avgpool", "flatten", "drop"):
            v = self._nonneg(node.args[0], memo)
        elif kind == "add":
            v = all(self._nonneg(x, memo) for x in node.args[:2])
        elif kind == "cat":
            v = all(self._nonneg(x, memo) for x in _arg(node, 0, "tensors"))
        else:
            v = False
        memo[node] = v
        return v

    def nonneg(self, node: Any) -> bool:
        return isinstance(node, fx.Node) and self.nonneg_of.get(node, False)

    def reads_input(self, node: fx.Node) -> bool:
        return self.ops[_through(self.ops, node, ("drop", "flatten"))].kind == "input"

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name = f"{base}_{i}"
            i += 1
        self.taken.add(name)
        return name

    def install(self, name: str, module: nn.Module) -> None:
        parent, _, leaf = name.rpartition(".")
        self.gm.get_submodule(parent).add_module(leaf, module)

    def act(self, name: str, input_node: Any) -> dict:
        s = layer_spec(self.spec, name)
        return {"bits": s.act_bits, "signed": not self.nonneg(input_node), "learned": s.learned_step}

    def layer_spec(self, name: str, input_node: Any) -> tuple[LayerSpec, bool, float | None]:
        spec = layer_spec(self.spec, name)
        if self.reads_input(input_node) and spec.act_bits != FLOAT_BITS:
            return replace(spec, act_bits=8), False, PIXEL_SCALE  # the uint8 pixel grid
        return spec, not self.nonneg(input_node), None

    def replace_node(self, node: fx.Node, target: str, args: tuple) -> fx.Node:
        with self.graph.inserting_before(node):
            new = self.graph.call_module(target, args)
        new.meta = dict(node.meta)
        self.ops[new], self.nonneg_of[new] = self.ops[node], self.nonneg_of[node]
        node.replace_all_uses_with(new)
        self.graph.erase_node(node)
        return new

    def bypass(self, node: fx.Node, to: Any) -> None:
        node.replace_all_uses_with(to)
        self.graph.erase_node(node)

    # -------------------------------------------------------------- passes
    def run(self) -> fx.GraphModule:
        nodes = list(self.graph.nodes)
        for n in nodes:  # layers first: signedness reads the original graph
            kind = self.ops[n].kind
            if kind in ("conv", "linear"):
                self.layer(n)
        for n in nodes:
            kind = self.ops[n].kind
            if kind == "add":
                self.shared(n, "add", lambda a: QAdd(a["bits"], a["signed"], a["learned"]), n.args[:2],
                            all(self.nonneg(x) for x in n.args[:2]))
            elif kind == "cat":
                xs = tuple(_arg(n, 0, "tensors"))
                dim = self.ops[n].info["dim"]
                self.shared(n, "cat", lambda a: QConcat(a["bits"], a["signed"], dim, a["learned"]), xs,
                            all(self.nonneg(x) for x in xs))
            elif kind == "avgpool":
                self.avgpool(n)
        for n in list(self.graph.nodes):
            kind = self.ops[n].kind if n.op != "call_module" or not isinstance(
                self.gm.get_submodule(n.target), (QAdd, QConcat, QAvgPool2d)) else "quantized"
            if kind == "bn" or kind == "drop":
                self.bypass(n, n.args[0])
            elif kind == "flatten" and n.op != "call_module":
                with self.graph.inserting_before(n):
                    new = self.graph.call_function(torch.flatten, (n.args[0], 1))
                new.meta = dict(n.meta)
                self.bypass(n, new)
            elif kind == "clamp" and clamp_bounds(self.gm, n) != (0.0, math.inf):
                lo, hi = clamp_bounds(self.gm, n)
                with self.graph.inserting_before(n):
                    new = self.graph.call_function(F.hardtanh, (n.args[0], lo, hi))
                new.meta = dict(n.meta)
                self.bypass(n, new)
        self.graph.eliminate_dead_code()
        unknown = sorted(set(self.spec.layers) - set(self.names))
        if unknown:
            raise ConfigError(f"quant.layers: no quantized layer named {', '.join(map(repr, unknown))}; "
                              f"the model's layers: {', '.join(self.names)}")
        self.graph.lint()
        self.gm.delete_all_unused_submodules()  # the BatchNorms folded into their convs, dropouts ...
        self.gm.recompile()
        return self.gm

    def layer(self, n: fx.Node) -> None:
        m = self.gm.get_submodule(n.target)
        name = str(n.target)
        self.names.append(name)
        x = n.args[0]
        spec, signed, fixed = self.layer_spec(name, x)
        with torch.no_grad():
            if isinstance(m, nn.Conv2d):
                padding = _string_padding(m) if isinstance(m.padding, str) else m.padding
                kw = dict(stride=m.stride, padding=padding, bias=m.bias is not None, in_signed=signed,
                          in_fixed_scale=fixed, dilation=m.dilation, groups=m.groups)
                bn_node = self.a.bn_of.get(n)
                if bn_node is not None:
                    bn = self.gm.get_submodule(bn_node.target)
                    q = QConvBn2d(m.in_channels, m.out_channels, m.kernel_size, spec, bn_eps=bn.eps,
                                  bn_momentum=bn.momentum, bn_affine=bn.affine, **kw)
                    q.bn.load_state_dict(bn.state_dict())
                else:
                    q = QConv2d(m.in_channels, m.out_channels, m.kernel_size, spec, **kw)
            else:
                q = QLinear(m.in_features, m.out_features, spec, bias=m.bias is not None, in_signed=signed,
                            in_fixed_scale=fixed)
            q.weight.copy_(m.weight)
            if m.bias is not None:
                q.bias.copy_(m.bias)
            q.reset_steps()
        q.train(m.training)
        self.install(name, q)

    def shared(self, n: fx.Node, kind: str, make: Callable[[dict], nn.Module], inputs: tuple, nonneg: bool) -> None:
        name = self.fresh(f"{owner(n)}.{kind}" if owner(n) else kind)
        self.names.append(name)
        a = self.act(name, None)
        a["signed"] = not nonneg
        self.install(name, make(a))
        self.replace_node(n, name, tuple(inputs))

    def avgpool(self, n: fx.Node) -> None:
        info = self.ops[n].info
        if n.op == "call_module":
            name = str(n.target)
        else:
            name = self.fresh(f"{owner(n)}.avgpool" if owner(n) else "avgpool")
        self.names.append(name)
        a = self.act(name, n.args[0])
        if info["global"]:
            q = QAvgPool2d(a["bits"], a["signed"], keepdim=info["keepdim"], learned=a["learned"])
        else:
            q = QAvgPool2d(a["bits"], a["signed"], info["kernel_size"], info["stride"], info["padding"],
                           learned=a["learned"])
        self.install(name, q)
        self.replace_node(n, name, (n.args[0],))


def quantize(model: nn.Module, spec: QuantConfig | None = None, input_shape: tuple[int, ...] | None = None,
             arch: str | None = None) -> fx.GraphModule:
    """The quantized twin of the float ``model`` (unchanged itself), as the module docstring says.

    ``spec``: the ``[quant]`` section (default: 8-bit weights per channel and 8-bit activations);
    ``input_shape``: one image ``(C, H, W)`` (default: ``model.input_shape``). Raises one
    UnsupportedError listing every problem the scan finds, and a ConfigError for per-layer
    overrides that name no layer. The twin carries ``input_shape``, ``num_classes`` and ``arch``."""
    spec = spec if spec is not None else QuantConfig()
    input_shape = tuple(input_shape if input_shape is not None else getattr(model, "input_shape", ()) or ())
    if len(input_shape) != 3:
        raise ConfigError("quantize: give input_shape, one image as (C, H, W)")
    training = model.training
    a = _analyse(copy.deepcopy(model), input_shape)
    if a.problems:
        _raise(a.problems)
    twin = _Rewrite(a, spec, input_shape).run()
    twin.train(training)
    twin.input_shape = input_shape
    twin.num_classes = a.num_classes
    twin.arch = arch or type(model).__name__
    return twin


def quantized_names(twin: nn.Module) -> list[str]:
    """Module names of the layers a ``[quant.layers.NAME]`` override can address."""
    kinds = (QConv2d, QLinear, QAdd, QConcat, QAvgPool2d)
    return [n for n, m in twin.named_modules() if isinstance(m, kinds)]


__all__ = ["clamp_bounds", "describe", "quantize", "quantized_names", "scan", "trace_float"]
