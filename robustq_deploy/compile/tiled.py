"""The tiled kernels of :mod:`robustq_deploy.kernels` as implementations of the per-op hook.

``robustq_deploy.compile`` lowers every integer convolution, integer matrix product and
bit-packed layer through :func:`robustq_deploy.compile.implementations.lower`; :func:`enable`
registers, at priority :data:`PRIORITY` (above the generic implementations), the project's tiled
kernels for those op kinds as the library :data:`NAME`. A compile uses them when its target
description lists the library (``kernels = ["tiled"]`` in ``targets/x86.toml`` and
``targets/aarch64.toml``): the CPU backend calls :func:`enable`, imports inside
``use_libraries(NAME)`` and builds with :func:`tir_pipeline`. Outside that scope (tests of the
generic lowering, targets that do not list it) the registry picks exactly what it picked before:

=================  ========================================================================
``int_conv2d``     2-D, groups 1, no dilation, equal strides and symmetric equal padding,
                   uint8/int8 input with a constant per-tensor zero point, constant int8
                   weights without zero point: :mod:`robustq_deploy.kernels.int8_conv2d`
                   Depthwise (``groups`` == input == output channels, any stride and
                   padding, no dilation), same inputs and weights:
                   :mod:`robustq_deploy.kernels.int8_depthwise`
``int_conv2d_requant``  the same convolutions (and depthwise) with the int32 bias and onnxruntime's
                   float rescale fused into the kernel's epilogue (``uint8`` / ``int8`` NCHW out)
``int_matmul``     2-D ``a`` [M, K] uint8/int8 with a constant scalar zero point, constant
                   int8 ``b`` [K, N] without zero point: :mod:`robustq_deploy.kernels.int8_dense`
``binary_conv2d``  {-1,+1} input (``x_binary``), no padding: :mod:`robustq_deploy.kernels.binary`
``binary_gemm``    {-1,+1} input: :mod:`robustq_deploy.kernels.binary`
=================  ========================================================================

Each returns the exact int32 accumulator the hook specifies (NCHW / [M, N]), or its
requantized form; the kernel stages its logical input into its own layout (NHWC, storage
offset, packed bits) and the weights are packed at compile time. Convolutions read and write
NHWC inside transposes to and from the graph's NCHW (:func:`emit`), which
:func:`robustq_deploy.compile.layout.sink_transposes` cancels between kernels; a conv whose
input comes from the graph's input rather than a kernel (:func:`from_kernels`) gathers it NCHW. Anything outside these conditions returns ``None`` and
the next implementation (the generic one) is used. The compile graph requantizes in its own
ops, so this path does not fuse epilogues; the fused whole-network path is :mod:`.fused`.

A build that uses these kernels should pass ``tir_pipeline=tir_pipeline()`` to ``tvm.compile``
(see :func:`tir_pipeline`), or LLVM spills every accumulator tile, and schedule the functions
between the kernels (:func:`finish_lowering`), or those run unscheduled on one thread.
"""
from __future__ import annotations

import numpy as np

from ..kernels import binary as B
from ..kernels import epilogue as E
from ..kernels import int8_conv2d as C
from ..kernels import int8_dense as D
from ..kernels import int8_depthwise as DW
from ..kernels import layout as L
from ..kernels.registry import KernelContext
from .implementations import OpCall, implementation_names, register_implementation
from .registry import const_value, dtype_of, shape_of

PRIORITY = 10
NAME = "tiled"  # the name target descriptions list in ``kernels``


def context(call: OpCall) -> KernelContext | None:
    """Kernel context of the call's target description (None without one)."""
    if call.target is None:
        return None
    return KernelContext.for_features(call.target.features())


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
    from tvm import relax

    bound = bb.lookup_binding(expr) if isinstance(expr, relax.Var) else None  # DataflowVar included
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


def emit(call: OpCall, func, name: str, args: list, out_shape: list, dtype: str = "int32",
         channels_last: tuple[bool, bool] = (False, False)):
    """Add the scheduled PrimFunc to the module and call it (opaque: never re-fused).
    ``channels_last`` (input, output): the kernel reads / writes NHWC; the call is wrapped in
    transposes from and back to the graph's NCHW, which :func:`.layout.sink_transposes` cancels
    between kernels (``out_shape`` is the logical NCHW shape)."""
    from tvm import relax

    from .layout import TO_NCHW, TO_NHWC

    func = func.without_attr("global_symbol").with_attrs({"tirx.is_scheduled": True, "op_pattern": 8})
    gv = call.bb.add_func(func, name)
    consts = [relax.const(a, str(a.dtype)) for a in args[1:]]
    nhwc_in, nhwc_out = channels_last
    x = call.bb.emit(relax.op.permute_dims(args[0], list(TO_NHWC))) if nhwc_in else args[0]
    shape = [out_shape[i] for i in TO_NHWC] if nhwc_out else out_shape
    y = call.bb.emit(relax.call_tir(gv, [x] + consts, relax.TensorType(shape, dtype)))
    return call.bb.emit(relax.op.permute_dims(y, list(TO_NCHW))) if nhwc_out else y


def from_kernels(bb, expr, limit: int = 64) -> bool:
    """Whether ``expr`` is computed (through the ops between kernels) from a kernel's output:
    then, once the transposes are sunk, it is there in NHWC. A graph input (the first conv's)
    is NCHW, and the kernel gathers it itself rather than after a separate transpose. Looks at
    most ``limit`` bindings back (each once)."""
    from tvm import relax

    seen, todo = set(), [expr]
    while todo and len(seen) < limit:
        v = todo.pop()
        if not isinstance(v, (relax.Var, relax.Call)) or v in seen:
            continue
        seen.add(v)
        bound = bb.lookup_binding(v) if isinstance(v, relax.Var) else v  # an operand not emitted yet
        if not isinstance(bound, relax.Call):
            continue
        name = getattr(bound.op, "name", "")
        if name == "relax.permute_dims":
            return True
        todo.extend(bound.args[1].fields if name == "relax.call_tir" else bound.args)
    return False


def int_conv2d(call: OpCall):
    return _conv2d(call, None)


def int_conv2d_requant(call: OpCall):
    """``int_conv2d_requant`` (convolution or depthwise, int32 bias and onnxruntime's float
    rescale) as one kernel with the rescale in its epilogue."""
    r = call.attrs["requant"]
    return _conv2d(call, E.FloatRequant(int(r["zero_point"]), int(r["lo"]), int(r["hi"]), r["dtype"]))


def _rescale_consts(call: OpCall) -> tuple[np.ndarray, np.ndarray]:
    """The int32 bias and float32 multiplier per channel of ``int_conv2d_requant``."""
    r = call.attrs["requant"]
    return r["bias"], r["multiplier"]


def _conv2d(call: OpCall, q: E.FloatRequant | None):
    """``int_conv2d`` (``q`` None: the int32 accumulator) or ``int_conv2d_requant`` on the kernels."""
    ctx = context(call)
    x, w = call.operands["x"], call.operands["w"]
    g = call.attrs
    wv = const_value(w)
    xs = shape_of(x)
    if ctx is None or wv is None or wv.ndim != 4 or wv.dtype != np.int8 or dtype_of(x) not in ("uint8", "int8"):
        return None
    zp = _scalar_zero_point(call.operands["x_zp"])
    if zp is None or not _zero_or_none(call.operands["w_zp"]) or not all(isinstance(d, int) for d in xs[1:]):
        return None
    if g["groups"] != 1:
        return depthwise_conv2d(call, ctx, zp, q)
    if any(d != 1 for d in g["dilation"]) or len(set(g["strides"])) != 1 or len(set(g["padding"])) != 1:
        return None
    low = ctx.lowering
    _, c, h, wd = xs
    oc, _, kh, kw = wv.shape
    storage = L.storage_for(dtype_of(x) == "int8", low.act_dtype)
    epi = E.Raw(q)
    spec = C.Conv2d(h, wd, c, oc, (kh, kw), g["strides"][0], g["padding"][0], storage, zp + storage.offset,
                    epi, source=dtype_of(x), channels_last=from_kernels(call.bb, x), out_channels_last=True)
    func = C.build(spec, low, batch=_batch(xs[0]))
    oh, ow = spec.out_hw
    if q is None:
        consts = C.pack(spec, low, wv, None, {}, zp)
    else:
        bias, mult = _rescale_consts(call)
        consts = C.pack(spec, low, wv, bias, {"mult": mult}, zp)
    return emit(call, func, "robustq_conv2d", [x] + consts, [xs[0], oc, oh, ow], epi.dtype,
                channels_last=(spec.channels_last, True))


def depthwise_conv2d(call: OpCall, ctx: KernelContext, zp: int, q: E.FloatRequant | None = None):
    """A depthwise ``int_conv2d`` (one filter per channel) on :mod:`robustq_deploy.kernels.int8_depthwise`
    (``q``: with ``int_conv2d_requant``'s rescale fused)."""
    x, wv, g = call.operands["x"], const_value(call.operands["w"]), call.attrs
    n, c, h, wd = shape_of(x)
    if g["groups"] != c or wv.shape[:2] != (c, 1) or any(d != 1 for d in g["dilation"]):
        return None
    t, lft, b, r = (int(p) for p in g["padding"])
    spec = DW.Depthwise(h, wd, c, tuple(wv.shape[2:]), tuple(int(s) for s in g["strides"]), (t, lft, b, r),
                        dtype_of(x), zp, q)
    func = DW.build(spec, ctx.lowering.lanes, batch=_batch(n))
    bias, mult = _rescale_consts(call) if q is not None else (None, None)
    consts = DW.pack(wv, bias, mult, zero_point=zp)
    return emit(call, func, "robustq_depthwise", [x] + consts, [n, c, *spec.out_hw], q.dtype if q else "int32",
                channels_last=(True, True))


def int_matmul(call: OpCall):
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


def _binary_weights(call: OpCall, k: int) -> np.ndarray:
    """The packed ``ai.robustq`` weights as {-1,+1} levels [OC, K] (K in (c, kh, kw) order)."""
    from ..export.robustq_ops import unpack_weights

    return unpack_weights("binary", call.operands["w"], k).astype(np.int8)


def binary_conv2d(call: OpCall):
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


def binary_gemm(call: OpCall):
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


TILED = {"int_conv2d": int_conv2d, "int_conv2d_requant": int_conv2d_requant, "int_matmul": int_matmul,
         "binary_conv2d": binary_conv2d, "binary_gemm": binary_gemm}


def enable() -> str:
    """Register the tiled kernels with the compile stage's hook as the library :data:`NAME`
    (idempotent); returns the library name to pass to ``use_libraries``."""
    for op, fn in TILED.items():
        if NAME not in implementation_names(op):
            register_implementation(op, NAME, priority=PRIORITY, library=NAME)(fn)
    return NAME


def used(counts: dict[str, int]) -> bool:
    """Whether a compile's implementation counts (``meta["implementations"]``) include this library's."""
    return any(k.endswith(f":{NAME}") for k in counts)


def finish_lowering(lowered, counts: dict[str, int]):
    """The lowered module to build: where the kernels were used, the functions between them
    scheduled for the CPU too (:mod:`robustq_deploy.kernels.generic_schedule`); otherwise unchanged."""
    if not used(counts):
        return lowered
    from ..kernels.generic_schedule import schedule_between_kernels

    return schedule_between_kernels(lowered)
