"""Partition a Relax module between the accelerator and the host: Relax bring-your-own-codegen.

:func:`partition` takes the module the compile stage imported (integer layers in their
canonical form, :mod:`.kernels`) and

1. names each integer conv / matmul after its ONNX layer (graph order), and finds the values
   known to hold only -1 / +1 (the sign thresholds of binary layers and what pooling or
   reshaping makes of them: the XNOR array needs them);
2. runs ``relax.transform.FuseOpsByPattern`` with the patterns of :mod:`.patterns`, longest
   first, ``annotate_codegen=True``: each match becomes a composite function
   (``fpga_sim.conv_bias_requant_pool`` ...) wrapped in a function with ``Codegen = "fpga_sim"``.
   A pattern's check reads the match into a :class:`.layer.OffloadLayer` and accepts it only if
   the accelerator can run it (:func:`.layer.problems`, :func:`.schedule.fit_problems`) and no
   intermediate value is used outside it; otherwise a shorter pattern is tried, and a layer no
   pattern takes stays on the host;
3. gives each wrapper the global symbol ``fpga_<layer>`` and runs ``relax.transform.RunCodegen``,
   which calls the external codegen registered here as ``relax.ext.fpga_sim`` with the wrappers
   and replaces every call by ``call_dps_packed("fpga_<layer>", x)``.

Why this path: Relax 0.27 lets a codegen written in Python register ``relax.ext.<name>``;
RunCodegen hands it the offloaded functions and rewrites the call sites, exactly the BYOC
contract. Our codegen returns no runtime module to link into the host library: the accelerator
is a separate artifact (C sources and the simulation library built from them, :mod:`.simlib`),
and the runner imports that library into the host module at load time, where the VM finds the
``fpga_<layer>`` functions (:mod:`.runner`). So the host library stays a plain TVM library and
the accelerator's code can be inspected, hashed and swapped on its own.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import onnx

from .desc import AccelDesc
from .layer import OffloadLayer, problems
from .patterns import CODEGEN, accumulating_op, match_composite, pattern_table, read_layer
from .schedule import fit_problems

# ONNX ops that become one integer conv / matmul in the imported module, in graph order.
LAYER_OPS = frozenset({"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm", "FusedConv",
                       "FusedMatMul", "FusedGemm", "BinaryConv2d", "TernaryConv2d", "BinaryGemm", "TernaryGemm"})
# Ops that keep a tensor of -1/+1 values -1/+1.
_BINARY_PRESERVING = frozenset({"relax.nn.max_pool2d", "relax.reshape", "relax.permute_dims", "relax.squeeze",
                                "relax.expand_dims", "relax.flatten"})


@dataclass(frozen=True)
class HostLayer:
    """A layer left on the host CPU, and why."""

    name: str
    op: str
    reasons: tuple[str, ...]
    macs: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "placement": "host", "op": self.op, "reasons": list(self.reasons),
                "macs": self.macs}


@dataclass
class Partition:
    mod: Any  # IRModule: offloaded layers are call_dps_packed("fpga_<layer>", ...)
    layers: list[OffloadLayer]  # offloaded, graph order
    host: list[HostLayer]
    order: list[str] = field(default_factory=list)  # every layer name, graph order


def onnx_layer_names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in LAYER_OPS]


def _c_names(names: list[str]) -> list[str]:
    """Unique C identifiers (``conv1``, ``layer_3`` ...)."""
    out, seen = [], set()
    for i, n in enumerate(names):
        c = re.sub(r"\W", "_", n).strip("_").lower() or f"layer{i}"
        c = c if not c[0].isdigit() else f"l{c}"
        while c in seen:
            c = f"{c}_{i}"
        seen.add(c)
        out.append(c)
    return out


def _bindings(func) -> list:
    return [b for block in func.body.blocks for b in block.bindings]


def binary_exprs(func) -> set:
    """Vars and values of ``func`` that hold only -1 and +1."""
    from tvm import relax

    from ..compile.registry import const_value

    found: set = set()
    for b in _bindings(func):
        v = b.value
        if not isinstance(v, relax.Call) or not hasattr(v.op, "name"):
            continue
        binary = False
        if v.op.name == "relax.where" and len(v.args) == 3:
            branches = [const_value(a) for a in v.args[1:]]
            binary = all(c is not None and c.size and set(c.reshape(-1).tolist()) <= {-1, 1} for c in branches)
        elif v.op.name in _BINARY_PRESERVING and v.args and v.args[0] in found:
            binary = True
        if binary:
            found.update((b.var, v))
    return found


class _Session:
    """What one partition collects while RunCodegen calls ``relax.ext.fpga_sim``."""

    def __init__(self):
        self.layers: dict[str, OffloadLayer] = {}

    def add(self, wrapper) -> None:
        composite = _inner_functions(wrapper)[0]
        named = match_composite(composite)
        name = str(composite.attrs["layer"])
        spec, why = read_layer(named, name, str(composite.attrs["x_binary"]) == "1", str(composite.attrs["Composite"]))
        if spec is None:
            raise RuntimeError(f"{name}: accepted by the fusion, refused by the codegen: {why}")  # a bug
        self.layers[name] = spec


_ACTIVE: contextvars.ContextVar[_Session | None] = contextvars.ContextVar("robustq_fpga_session", default=None)


def _codegen(functions, options, constant_names):
    """``relax.ext.fpga_sim``: read each offloaded function into the active session's layers."""
    session = _ACTIVE.get()
    if session is None:
        raise RuntimeError("relax.ext.fpga_sim runs inside robustq_deploy.accel.partition only")
    for f in functions:
        session.add(f)
    return []


@contextlib.contextmanager
def _session() -> Iterator[_Session]:
    import tvm_ffi

    tvm_ffi.register_global_func(f"relax.ext.{CODEGEN}", _codegen, override=True)
    s = _Session()
    token = _ACTIVE.set(s)
    try:
        yield s
    finally:
        _ACTIVE.reset(token)


def _reasons(spec: OffloadLayer | None, why: list[str], desc: AccelDesc) -> list[str]:
    if spec is None:
        return why
    return problems(spec, desc) + fit_problems(spec, desc)


def partition(mod, desc: AccelDesc, layer_names: list[str]) -> Partition:
    """Offload what ``desc`` can run (see the module docstring)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.utils import has_leaking_intermediate_variables

    main = mod["main"]
    accs = [b.value for b in _bindings(main) if accumulating_op(b.value)]
    names = _c_names(layer_names if len(layer_names) == len(accs) else [f"layer{i}" for i in range(len(accs))])
    binary = binary_exprs(main)
    # Layers are keyed by their weight constant: fusing one layer rebuilds the calls after it (their
    # inputs change), but constants stay the same objects.
    name_of = {acc.args[1]: n for acc, n in zip(accs, names)}
    x_binary = {acc.args[1]: acc.args[0] in binary for acc in accs}

    def check_for(pattern: str):
        def check(ctx) -> bool:
            named = dict(ctx.annotated_expr.items())
            name = name_of.get(named["w"])
            if name is None or has_leaking_intermediate_variables(ctx):
                return False
            spec, why = read_layer(named, name, x_binary[named["w"]], pattern)
            return spec is not None and not _reasons(spec, why, desc)
        return check

    def attrs(named) -> dict[str, str]:
        return {"layer": name_of[named["w"]], "x_binary": "1" if x_binary[named["w"]] else "0"}

    patterns = [relax.transform.FusionPattern(name, pat, ann, check_for(name), attrs)
                for name, (pat, ann) in pattern_table().items()]
    fused = relax.transform.FuseOpsByPattern(patterns, bind_constants=True, annotate_codegen=True)(mod)
    funcs = {}
    for gv, func in fused.functions.items():
        if isinstance(func, relax.Function) and func.attrs is not None and "Codegen" in func.attrs:
            func = func.with_attr("global_symbol", f"fpga_{_inner_functions(func)[0].attrs['layer']}")
        funcs[gv] = func
    named_mod = tvm.IRModule(funcs, attrs=fused.attrs)
    with _session() as session:
        out = relax.transform.RunCodegen()(named_mod)
    # RunCodegen keeps the offloaded functions' constants for runtime modules that load them; the
    # accelerator's C has its weights compiled in, so the host library must not carry them.
    out = out.without_attr("const_name_to_constant")
    layers = [session.layers[n] for n in names if n in session.layers]
    host = []
    for acc, n in zip(accs, names):
        if n in session.layers:
            continue
        pattern, named = _longest_chain(main, acc)
        spec, why = read_layer(named, n, acc.args[0] in binary, pattern)
        reasons = _reasons(spec, why, desc) or ["an intermediate value of the layer is used outside it"]
        kind = "conv" if acc.op.name == "relax.nn.conv2d" else "gemm"
        host.append(HostLayer(n, spec.describe() if spec else kind, tuple(reasons), spec.macs if spec else None))
    return Partition(out, layers, host, names)


def _longest_chain(main, acc) -> tuple[str, dict[str, Any]]:
    """The longest pattern matching the chain that starts at ``acc`` in ``main``, whether or not
    an accelerator can run it (to say why a host layer stays on the host)."""
    from tvm import relax

    var2val = relax.analysis.get_var2val(main)
    values = [b.value for b in _bindings(main)]
    for name, (pat, ann) in pattern_table().items():
        for v in values:
            m = pat.extract_matched_expr(v, var2val)
            if m is not None and m[ann["acc"]].same_as(acc):
                return name, {k: m[p] for k, p in ann.items()}
    return "", {"acc": acc, "x": acc.args[0], "w": acc.args[1]}  # every layer matches the bare pattern


def _inner_functions(func):
    """Nested relax functions of a wrapper (its composite)."""
    from tvm import relax

    found = []

    def visit(e):
        if isinstance(e, relax.Function) and e.attrs is not None and "Composite" in e.attrs:
            found.append(e)

    relax.analysis.post_order_visit(func.body, visit)
    return found


__all__ = ["HostLayer", "LAYER_OPS", "Partition", "binary_exprs", "onnx_layer_names", "partition"]
