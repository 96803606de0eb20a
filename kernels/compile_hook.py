"""The kernels as implementations of the compile stage's per-op kernel hook.

``robustq_deploy.compile`` lowers every integer convolution, integer matrix product and
bit-packed layer through :func:`robustq_deploy.compile.kernels.lower`; :func:`enable` registers,
at priority :data:`PRIORITY` (above the generic implementations), the project's tiled kernels
for those op kinds as the kernel library :data:`NAME`. The compile stage uses them by default
for the CPU targets they serve (:func:`serves`: LLVM x86 and AArch64 targets; not the fpga-sim
target, whose partitioner needs the canonical forms): it calls :func:`enable`, imports inside
``use_libraries(NAME)`` and builds with :func:`tir_pipeline`. Outside that scope (tests of the
generic lowering, other targets) the registry picks exactly what it picked before:

=================  ========================================================================
``int_conv2d``     2-D, groups 1, no dilation, equal strides and symmetric equal padding,
                   uint8/int8 input with a constant per-tensor zero point, constant int8
                   weights without zero point: :mod:`kernels.int8_conv2d` (VNNI / sdot tiles)
``int_matmul``     2-D ``a`` [M, K] uint8/int8 with a constant scalar zero point, constant
                   int8 ``b`` [K, N] without zero point: :mod:`kernels.int8_dense`
``binary_conv2d``  {-1,+1} input (``x_binary``), no padding: :mod:`kernels.binary`
``binary_gemm``    {-1,+1} input: :mod:`kernels.binary`
=================  ========================================================================

Each returns the exact int32 accumulator the hook specifies (NCHW / [M, N]); the kernel
stages its logical input into its own layout (NHWC, storage offset, packed bits) and the
weights are packed at compile time. Anything outside these conditions returns ``None`` and
the next implementation (the generic one) is used. The compile graph requantizes in its own
ops, so this path does not fuse epilogues; the fused whole-network path is
:mod:`kernels.network` (benchmarked by ``bench/latency.py``).

A build that uses these kernels should pass ``tir_pipeline=tir_pipeline()`` to ``tvm.compile``
(see :func:`tir_pipeline`), or LLVM spills every accumulator tile, and schedule the functions
between the kernels (:func:`finish_lowering`), or those run unscheduled on one thread.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from robustq_deploy.compile.kernels import KernelCall, kernel_names, register_kernel
from robustq_deploy.compile.registry import const_value, dtype_of, shape_of

from . import binary as B
from . import epilogue as E
from . import int8_conv2d as C
from . import int8_dense as D
from . import layout as L
from .registry import KernelContext

PRIORITY = 10
NAME = "robustq-tiled"


@lru_cache(maxsize=8)
def _context(spec_json: str) -> KernelContext:
    import json

    import tvm

    return KernelContext.for_target(tvm.target.Target(json.loads(spec_json)))


def context(call: KernelCall) -> KernelContext | None:
    """Kernel context of the call's target description (None without one)."""
    import json

    if call.target is None or not hasattr(call.target, "tvm_spec"):
        return None
    return _context(json.dumps(call.target.tvm_spec(), sort_keys=True))


def _scalar_zero_point(zp) -> int | None:
    """A constant per-tensor zero point as int (0 for none); None when not constant/scalar."""
    if zp is None:
        return 0
    v = const_value(zp)
    if v is None or np.asarray(v).size != 1:
        return None
    return int(np.asarray(v).reshape(()))


def _zero_or_none(zp) -> bool:
    if zp is None:
        return True
    v = const_value(zp)
    return v is not None and not np.any(v)


def _constant(bb, expr) -> np.ndarray | None:
    """A constant operand's value, looking through a transpose of a constant (the converters
    transpose a Gemm's ``transB`` weight with ``permute_dims`` before calling the hook)."""
    v = const_value(expr)
    if v is not None:
        return v
    bound = bb.lookup_binding(expr) if hasattr(expr, "name_hint") else None
    if bound is not None and getattr(getattr(bound, "op", None), "name", "") == "relax.permute_dims":
        inner = const_value(bound.args[0])
        axes = bound.attrs.axes
        if inner is not None:
            return np.transpose(inner, None if axes is None else [int(a) for a in axes])
    return None


def _batch(dim):
    """The batch extent for a kernel: the static size, or a fresh symbolic int64 variable."""
    from tvm import tirx

    return dim if isinstance(dim, int) else tirx.Var("n", "int64")


def emit(call: KernelCall, func, name: str, args: list, out_shape: list):
    """Add the scheduled PrimFunc to the module and call it (opaque: never re-fused)."""
    from tvm import relax

    func = func.without_attr("global_symbol").with_attrs({"tirx.is_scheduled": True, "op_pattern": 8})
    gv = call.bb.add_func(func, name)
    consts = [relax.const(a, str(a.dtype)) for a in args[1:]]
    return call.bb.emit(relax.call_tir(gv, [args[0]] + consts, relax.TensorType(out_shape, "int32")))


def int_conv2d(call: KernelCall):
    ctx = context(call)
    x, w = call.operands["x"], call.operands["w"]
    g = call.attrs
    wv = const_value(w)
    xs = shape_of(x)
    if ctx is None or wv is None or wv.ndim != 4 or wv.dtype != np.int8 or dtype_of(x) not in ("uint8", "int8"):
        return None
    if g["groups"] != 1 or any(d != 1 for d in g["dilation"]) or len(set(g["strides"])) != 1 or len(set(g["padding"])) != 1:
        return None
    zp = _scalar_zero_point(call.operands["x_zp"])
    if zp is None or not _zero_or_none(call.operands["w_zp"]) or not all(isinstance(d, int) for d in xs[1:]):
        return None
    low = ctx.lowering
    _, c, h, wd = xs
    oc, _, kh, kw = wv.shape
    storage = L.storage_for(dtype_of(x) == "int8", low.act_dtype)
    spec = C.Conv2d(h, wd, c, oc, (kh, kw), g["strides"][0], g["padding"][0], storage, zp + storage.offset,
                    E.Raw(), source=dtype_of(x))
    func = C.build(spec, low, batch=_batch(xs[0]))
    oh, ow = spec.out_hw
    return emit(call, func, "robustq_conv2d", [x] + C.pack(spec, low, wv, None, {}, zp), [xs[0], oc, oh, ow])


def int_matmul(call: KernelCall):
    ctx = context(call)
    a, b = call.operands["a"], call.operands["b"]
    bv = _constant(call.bb, b)
    sa = shape_of(a)
    if ctx is None or bv is None or bv.ndim != 2 or bv.dtype != np.int8 or len(sa) != 2 or not isinstance(sa[1], int):
        return None
    zp = _scalar_zero_point(call.operands["a_zp"])
    if dtype_of(a) not in ("uint8", "int8") or zp is None or not _zero_or_none(call.operands["b_zp"]):
        return None
    low = ctx.lowering
    k, n = bv.shape
    storage = L.storage_for(dtype_of(a) == "int8", low.act_dtype)
    spec = D.Dense(k, n, storage, E.Raw(), source=dtype_of(a), pad_value=zp + storage.offset)
    func = D.build(spec, low, batch=_batch(sa[0]))
    return emit(call, func, "robustq_dense", [a] + D.pack(spec, low, np.ascontiguousarray(bv.T), None, {}, zp), [sa[0], n])


def _binary_weights(call: KernelCall, k: int) -> np.ndarray:
    """The packed ``ai.robustq`` weights as {-1,+1} levels [OC, K] (K in (c, kh, kw) order)."""
    from robustq_deploy.export.robustq_ops import unpack_weights

    return unpack_weights("binary", call.operands["w"], k).astype(np.int8)


def binary_conv2d(call: KernelCall):
    ctx = context(call)
    x = call.operands["x"]
    xs = shape_of(x)
    if ctx is None or not call.attrs.get("x_binary") or any(call.attrs["pads"]) or dtype_of(x) != "int8":
        return None
    sh, sw = call.attrs["strides"]
    if sh != sw or not all(isinstance(d, int) for d in xs[1:]):
        return None
    _, c, h, wd = xs
    kh, kw = call.attrs["kernel_shape"]
    w = _binary_weights(call, c * kh * kw).reshape(-1, c, kh, kw)
    spec = B.BinaryConv2d(h, wd, c, w.shape[0], (kh, kw), sh, E.Raw(), source=True)
    func = B.build_conv(spec, ctx.bits, batch=_batch(xs[0]))
    oh, ow = spec.out_hw
    return emit(call, func, "robustq_binary_conv2d", [x] + B.pack_conv(spec, ctx.bits.lanes, w, None, {}),
                [xs[0], w.shape[0], oh, ow])


def binary_gemm(call: KernelCall):
    ctx = context(call)
    x = call.operands["x"]
    xs = shape_of(x)
    if ctx is None or not call.attrs.get("x_binary") or dtype_of(x) != "int8" or len(xs) != 2 or not isinstance(xs[1], int):
        return None
    w = _binary_weights(call, xs[1])
    spec = B.BinaryDense(xs[1], w.shape[0], E.Raw(), source=True)
    func = B.build_dense(spec, ctx.bits, batch=_batch(xs[0]))
    return emit(call, func, "robustq_binary_gemm", [x] + B.pack_dense(spec, ctx.bits.lanes, w, None, {}),
                [xs[0], w.shape[0]])


TIR_PIPELINE = "robustq"


def tir_pipeline() -> str:
    """Name of TVM's default TIR pipeline plus one pre-pass, registered on first call; pass it
    as ``tvm.compile(..., tir_pipeline=tir_pipeline())``.

    Why: TVM's LLVM code generator drops the no-alias facts of *every* function of a module
    as soon as one PrimFunc lacks the ``tirx.noalias`` attribute, and the Relax VM's generated
    shape functions lack it. Without those facts LLVM cannot keep a kernel's accumulator tile
    in registers and spills it around every ``vpdpbusd`` (measured 6x slower). The pre-pass
    marks functions with a single buffer parameter (the VM's shape functions), which are
    trivially alias-free, and nothing else.
    """
    import tvm
    from tvm.tirx import compilation_pipeline as cp

    if TIR_PIPELINE in cp.PIPELINE_MAP:
        return TIR_PIPELINE
    default = cp.PIPELINE_MAP["s_tir"]

    @tvm.transform.module_pass(opt_level=0, name="robustq.MarkShapeFuncsNoAlias")
    def mark(mod, _ctx):
        for gv, f in list(mod.functions.items()):
            if (isinstance(f, tvm.tirx.PrimFunc) and len(f.params) <= 1
                    and not (f.attrs is not None and f.attrs.get("tirx.noalias"))):
                mod[gv] = f.with_attr("tirx.noalias", True)
        return mod

    def pipeline(**kwargs):
        passes, host, device = default(**kwargs)
        return tvm.transform.Sequential([mark, passes]), host, device

    cp.PIPELINE_MAP[TIR_PIPELINE] = pipeline
    return TIR_PIPELINE


IMPLEMENTATIONS = {"int_conv2d": int_conv2d, "int_matmul": int_matmul, "binary_conv2d": binary_conv2d,
                   "binary_gemm": binary_gemm}


def serves(desc) -> bool:
    """Whether the compile stage uses this library for target description ``desc``: LLVM CPU
    targets (x86, AArch64) built for the CPU (not the fpga-sim accelerator's host)."""
    spec = desc.tvm if hasattr(desc, "tvm") else {}
    return spec.get("kind") == "llvm" and getattr(desc, "runner", "") != "fpga-sim"


def enable() -> str:
    """Register the tiled kernels with the compile stage's hook as kernel library :data:`NAME`
    (idempotent); returns the library name to pass to ``use_libraries``."""
    for op, fn in IMPLEMENTATIONS.items():
        if NAME not in kernel_names(op):
            register_kernel(op, NAME, priority=PRIORITY, library=NAME)(fn)
    return NAME


def used(kernel_counts: dict[str, int]) -> bool:
    """Whether a compile's kernel counts (``meta["kernels"]``) include this library's kernels."""
    return any(k.endswith(f":{NAME}") for k in kernel_counts)


def finish_lowering(lowered, kernel_counts: dict[str, int]):
    """The lowered module to build: where the kernels were used, the functions between them
    scheduled for the CPU too (:mod:`kernels.generic_schedule`); otherwise unchanged."""
    if not used(kernel_counts):
        return lowered
    from .generic_schedule import schedule_between_kernels

    return schedule_between_kernels(lowered)
