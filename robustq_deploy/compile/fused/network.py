"""A whole integer network as a chain of fused kernels, built into one TVM Relax module.

A :class:`Network` is a list of :class:`Node` s, each one kernel call (a spec from the kernel
modules plus its packed constants), reading and writing named stored tensors. Activations stay
in the kernels' storage layout (NHWC, padded channels, offset levels or packed bits) from the
input quantizer to the logits, so no layout transform runs between layers; flattening an NHWC
tensor for a dense layer is a free reshape (the dense weight was permuted at pack time).

:func:`compile_network` turns a network into a Relax module (one kernel call per node,
constants embedded, symbolic batch) and compiles it for a target; :class:`CompiledNetwork` runs it from
numpy with the least overhead the TVM FFI allows. :meth:`Network.reference` runs the same
network through every node's numpy reference on logical values: the compiled module must
match it bit for bit.

Networks are made from integer ONNX graphs by :mod:`.from_onnx` (what ``robustq compile`` builds)
and from the project's PyTorch twins by :mod:`.from_twin`; both feed :mod:`.builder`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...kernels.records import Records


@dataclass(frozen=True)
class TensorInfo:
    """A stored tensor between kernels: per-image shape and dtype."""

    shape: tuple[int, ...]
    dtype: str


@dataclass
class Node:
    name: str
    kernel: str  # a kernel family: a key of robustq_deploy.kernels.registry.KERNELS
    spec: Any
    consts: list[np.ndarray]
    inputs: list[str]
    outputs: list[str]
    reference: Callable[[list[np.ndarray]], list[np.ndarray]]  # logical inputs -> logical outputs
    flatten_input: bool = False  # reshape the (spatial) input to [N, features] first


@dataclass
class Network:
    name: str
    input: str
    input_shape: tuple[int, int, int]  # C, H, W of the float input
    output: str
    nodes: list[Node] = field(default_factory=list)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    ctx: Any = None  # the robustq_deploy.kernels.registry.KernelContext the constants were packed for

    def reference(self, x: np.ndarray, keep: bool = False) -> np.ndarray | dict[str, np.ndarray]:
        """Logits of the numpy reference on float input ``x`` [N, C, H, W] (all logical
        tensors when ``keep``)."""
        env = {self.input: x}
        for node in self.nodes:
            outs = node.reference([env[t] for t in node.inputs])
            env.update(zip(node.outputs, outs))
        return env if keep else env[self.output]

    def macs_per_image(self) -> dict[str, int]:
        """Multiply-accumulates (int8) and word operations (binary) of one image."""
        out = {"int8_macs": 0, "binary_word_ops": 0}
        for node in self.nodes:
            if hasattr(node.spec, "macs_per_image"):
                out["int8_macs"] += node.spec.macs_per_image
            if hasattr(node.spec, "word_ops_per_image"):
                out["binary_word_ops"] += node.spec.word_ops_per_image
        return out


def symbol(node: Node) -> str:
    return "rq_" + node.name.replace(".", "_")


def kernel_module(net: Network, target, records: Records | None = None):
    """The TIR IRModule of every kernel of ``net`` (symbolic batch), one parallel PrimFunc per
    node; ``records`` choose the register tiles of the shapes they know (others get the
    schedule's default tile)."""
    import tvm

    from ...kernels.registry import KERNELS

    funcs = {}
    for node in net.nodes:
        tile = records.tile(node.kernel, node.spec, target) if records else None
        f = KERNELS[node.kernel].build(node.spec, net.ctx, tile)
        funcs[symbol(node)] = f.with_attr("global_symbol", symbol(node))
    return tvm.IRModule(funcs)


def tiles_used(net: Network, target, records: Records | None) -> dict[str, list[int]]:
    """The register tile each node's record chose (nodes without a record are left out)."""
    out = {}
    for node in net.nodes:
        tile = records.tile(node.kernel, node.spec, target) if records else None
        if tile is not None:
            out[node.name] = [tile.pixels, tile.oc_blocks, tile.rows]
    return out


def relax_module(net: Network, batch: int | None = None):
    """The Relax IRModule of ``net``: one ``call_dps_packed`` per node into the kernel library,
    packed constants embedded; the batch is symbolic (``n``), or ``batch`` when given (then
    ``main`` takes exactly that many images)."""
    from tvm import relax, tirx

    bb = relax.BlockBuilder()
    c, h, w = net.input_shape
    n = tirx.Var("n", "int64") if batch is None else tirx.IntImm("int64", batch)
    x = relax.Var(net.input, relax.TensorType([n, c, h, w], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            env = {net.input: x}
            for node in net.nodes:
                args = []
                for i, t in enumerate(node.inputs):
                    v = env[t]
                    if i == 0 and node.flatten_input:
                        feats = int(np.prod(net.tensors[t].shape))
                        v = bb.emit(relax.op.reshape(v, relax.ShapeExpr([n, feats])))
                    args.append(v)
                # explicit dtype: relax.const narrows int64 arrays to int32 by default
                args += [relax.const(a, str(a.dtype)) for a in node.consts]
                sinfo = [relax.TensorType([n, *net.tensors[o].shape], net.tensors[o].dtype) for o in node.outputs]
                call = bb.emit(relax.call_dps_packed(symbol(node), args, sinfo if len(sinfo) > 1 else sinfo[0]))
                if len(sinfo) == 1:
                    env[node.outputs[0]] = call
                else:
                    for i, o in enumerate(node.outputs):
                        env[o] = bb.emit(relax.TupleGetItem(call, i))
            out = bb.emit_output(env[net.output])
        bb.emit_func_output(out)
    return bb.get()


def compile_network(net: Network, target, records: Records | None = None, batch: int | None = None):
    """Build and compile ``net``: a ``tvm.relax`` executable (``export_library`` to save), for
    every batch size or, with ``batch``, for that one.

    The kernels are compiled as their own TIR module and imported into the VM executable
    rather than placed in the Relax module as ``call_tir`` functions: compiled together with
    the VM's host-side shape functions, LLVM lost the no-alias facts of the kernels' arguments
    and spilled every accumulator to memory around every ``vpdpbusd`` (6x slower, measured);
    built alone, each register tile stays in registers.

    One Relax function serves every batch size. (A serial copy of the kernels for small
    batches was tried: TVM's VMShapeLower then names the two functions' shape functions in the
    iteration order of a hash map keyed by address, so the library bytes changed from run to
    run, measured in 3 of 16 builds; libraries must be deterministic.)
    """
    import tvm

    from ..build import relax_pipeline

    kernels = tvm.tirx.build(kernel_module(net, target, records), target=target)
    # the compile stage's Relax pipeline: TVM's default with the symbolic-batch shape stores put
    # in a fixed order, so the same network gives the same library bytes
    ex = tvm.compile(relax_module(net, batch), target=target, relax_pipeline=relax_pipeline())
    ex.mod.import_module(kernels)
    return ex


class CompiledNetwork:
    """A compiled network (executable or exported library path) callable on numpy input.

    Inputs reach TVM through :class:`robustq_deploy.runtime.TensorStaging` (small inputs copied
    into an aligned buffer whose TVM view is kept per shape, large aligned ones zero-copy):
    ``tvm.runtime.tensor(np_array)`` costs about 30 us per call, more than a whole MNIST
    inference. The result is the VM's output tensor seen by numpy without a copy: a fresh
    tensor each call (a fused network's output is written by its last kernel, never the input
    or a constant). Calls from several threads are serialised.
    """

    def __init__(self, executable_or_path, device=None):
        import threading

        import tvm
        from tvm import relax

        from ...runtime import TensorStaging

        ex = executable_or_path
        if isinstance(ex, (str, Path)):
            ex = tvm.runtime.load_module(str(ex))
        self.vm = relax.VirtualMachine(ex, device or tvm.cpu())
        self._main = self.vm["main"]
        self._staging = TensorStaging()
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.from_dlpack(self._main(self._staging(x)))


def export_network(ex, path: str | Path, cross_compiler: str | None = None) -> None:
    """Write a compiled network as a shared library, atomically (cross-linked when
    ``cross_compiler`` names a compiler, e.g. ``aarch64-linux-gnu-gcc``)."""
    from ..build import write_library

    write_library(ex, path, cross_compiler)
