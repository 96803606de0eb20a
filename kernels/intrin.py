"""Tensor intrinsics: the 4-wide int8 dot-product instructions that the schedules tensorize to.

Each intrinsic is a pair of TensorIR functions registered with ``tvm.s_tir.TensorIntrin``: a
description (plain loops ``C[i] += A[k] * B[i, k]``) that ``Schedule.tensorize`` matches against a
loop nest, and an implementation that calls the LLVM intrinsic of one instruction.

* ``VNNI_U8S8``: x86 AVX512-VNNI ``vpdpbusd``: 16 int32 lanes, each += 4 u8 x s8 products.
* ``SDOT_S8S8``: AArch64 dot-product ``sdot``: 4 int32 lanes, each += 4 s8 x s8 products.

Stock TVM ships similar intrinsics under ``tvm.s_tir.tensor_intrin``, but importing that package
takes about a minute (it loads every backend's intrinsics) and its VNNI implementation passes
``<16 x i32>`` operands that LLVM 22 rejects (``vpdpbusd`` now takes ``<64 x i8>``), so the
project registers its own. The accumulator lives in ``local`` scope: the schedules keep a tile of
accumulators in registers. To add an instruction, write a description/implementation pair and
register it in :func:`ensure_registered`.
"""
from __future__ import annotations

from dataclasses import dataclass

VNNI_U8S8 = "robustq.vnni_u8s8_16x4"
SDOT_S8S8 = "robustq.sdot_s8s8_4x4"


@dataclass(frozen=True)
class DotIntrin:
    """Shape of a dot-product intrinsic: ``lanes`` int32 outputs, each a ``group``-wide dot."""

    name: str
    lanes: int
    group: int
    act_dtype: str  # storage dtype the instruction wants for activations
    llvm: str  # LLVM intrinsic name (for the disassembly checks: see robustq_deploy.kernels.disasm)


INTRINSICS = {
    "vnni": DotIntrin(VNNI_U8S8, 16, 4, "uint8", "llvm.x86.avx512.vpdpbusd.512"),
    "sdot": DotIntrin(SDOT_S8S8, 4, 4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8"),
}

_registered = False


def _desc(lanes: int, act_dtype: str):
    """``C[lanes] += A[4] . B[lanes, 4]`` as loops: what ``tensorize`` matches."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), act_dtype, offset_factor=1),
             B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _dot_pair(lanes: int, act_dtype: str, llvm_name: str, operand_dtype: str):
    """Description and one-instruction implementation of the lane dot product."""
    from tvm.script import tirx as T

    vec_a = f"{act_dtype}x4"
    vec_b = f"int8x{lanes * 4}"
    vec_c = f"int32x{lanes}"
    vec_op = f"{operand_dtype}x{lanes * 4}"

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), act_dtype, offset_factor=1),
             B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a32 = T.reinterpret(A.vload([0], vec_a), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                C.vload([0], dtype=vec_c),
                T.reinterpret(T.broadcast(a32, lanes), dtype=vec_op),
                T.reinterpret(B.vload([0, 0], dtype=vec_b), dtype=vec_op),
                dtype=vec_c,
            )

    return _desc(lanes, act_dtype), impl


def _generic_pair(lanes: int, act_dtype: str):
    """``C[lanes] += A[4] . B[lanes, 4]`` as plain vector arithmetic (any CPU, exact): four
    broadcast multiply-adds in int32, for CPUs without a dot-product instruction."""
    from tvm.script import tirx as T

    desc = _desc(lanes, act_dtype)
    vec_c = f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), act_dtype, offset_factor=1),
             B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            Bf = T.decl_buffer((lanes * 4,), "int8", data=B.data, elem_offset=B.elem_offset)
            C[T.ramp(T.int32(0), 1, lanes)] = (
                C[T.ramp(T.int32(0), 1, lanes)]
                + T.broadcast(T.cast(A[0], "int32"), lanes) * T.cast(Bf[T.ramp(T.int32(0), 4, lanes)], vec_c)
                + T.broadcast(T.cast(A[1], "int32"), lanes) * T.cast(Bf[T.ramp(T.int32(1), 4, lanes)], vec_c)
                + T.broadcast(T.cast(A[2], "int32"), lanes) * T.cast(Bf[T.ramp(T.int32(2), 4, lanes)], vec_c)
                + T.broadcast(T.cast(A[3], "int32"), lanes) * T.cast(Bf[T.ramp(T.int32(3), 4, lanes)], vec_c))

    return desc, impl


def generic_intrin(lanes: int, act_dtype: str) -> DotIntrin:
    """The vector fallback intrinsic for ``lanes`` int32 lanes, registered on first use."""
    from tvm.s_tir import TensorIntrin

    name = f"robustq.vector_{act_dtype}s8_{lanes}x4"
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, *_generic_pair(lanes, act_dtype))
    return DotIntrin(name, lanes, 4, act_dtype, "")


def ensure_registered() -> None:
    """Register the project's intrinsics once per process (idempotent)."""
    global _registered
    if _registered:
        return
    from tvm.s_tir import TensorIntrin

    pairs = {
        VNNI_U8S8: _dot_pair(16, "uint8", INTRINSICS["vnni"].llvm, "int8"),
        SDOT_S8S8: _dot_pair(4, "int8", INTRINSICS["sdot"].llvm, "int8"),
    }
    for name, (desc, impl) in pairs.items():
        if TensorIntrin.get(name, allow_missing=True) is None:
            TensorIntrin.register(name, desc, impl)
    _registered = True


def xor_popcount_intrin(lanes: int, byte_dot: bool = False) -> str:
    """``C[lanes] += popcount(A[0] ^ B[lanes])`` on uint32 words (int32 counts), registered on
    first use.

    Plain vector code: LLVM emits ``vpopcntd`` with AVX512-VPOPCNTDQ, ``cnt`` + pairwise adds
    on NEON, and without either a ``vpshufb`` nibble-table sequence whose byte-to-dword widening
    alone costs six shuffles. ``byte_dot`` (x86 with VNNI but no VPOPCNTDQ) counts bits per
    byte instead (``vpshufb`` table, or ``vpopcntb`` with BITALG) and adds each dword's four
    byte counts into the accumulator with one ``vpdpbusd`` against a vector of ones.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    name = f"robustq.xor_popcount_{lanes}" + ("_bytes" if byte_dot else "")
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    vec_w = f"uint32x{lanes}"
    vec_b = f"uint8x{lanes * 4}"
    vec_c = f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((1,), "uint32", offset_factor=1),
             B: T.Buffer((lanes,), "uint32", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                with T.sblock("update"):
                    vi = T.axis.remap("S", [i])
                    C[vi] = C[vi] + T.cast(T.popcount(A[0] ^ B[vi]), "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((1,), "uint32", offset_factor=1),
             B: T.Buffer((lanes,), "uint32", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = C[T.ramp(T.int32(0), 1, lanes)] + T.reinterpret(
                T.popcount(T.broadcast(A[0], lanes) ^ B.vload([0], dtype=vec_w)), dtype=vec_c)

    pshufb = T.llvm_lookup_intrinsic_id("llvm.x86.avx512.pshuf.b.512")
    ternlog = T.llvm_lookup_intrinsic_id("llvm.x86.avx512.pternlog.d.512")
    srlw = T.llvm_lookup_intrinsic_id("llvm.x86.avx512.psrli.w.512")
    dot = T.llvm_lookup_intrinsic_id(INTRINSICS["vnni"].llvm)
    vec_i = f"int32x{lanes}"
    vec_h = f"int16x{lanes * 2}"
    vec_s = f"int8x{lanes * 4}"

    @T.prim_func(s_tir=True)
    def impl_bytes(A: T.Buffer((1,), "uint32", offset_factor=1),
                   B: T.Buffer((lanes,), "uint32", offset_factor=1),
                   C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes])
            T.writes(C[0:lanes])
            # nibble-table popcount per byte. (a ^ b) & 0x0f is one vpternlogd; the high nibbles
            # come from each operand shifted separately ((a ^ b) >> 4 == (a >> 4) ^ (b >> 4)), so
            # the shifts of the broadcast input and of the weight vector are shared across the
            # register tile: 6 instructions per 16 words instead of 8
            a = T.reinterpret(T.broadcast(A[0], lanes), dtype=vec_i)
            b = T.reinterpret(B.vload([0], dtype=vec_w), dtype=vec_i)
            nib = T.broadcast(T.int32(0x0F0F0F0F), lanes)
            table = T.reinterpret(T.popcount(T.ramp(T.uint8(0), T.uint8(1), lanes * 4) & T.broadcast(T.uint8(15), lanes * 4)),
                                  dtype=vec_s)
            lo = T.call_llvm_pure_intrin(vec_i, ternlog, a, b, nib, T.int32(0x28))
            ah = T.reinterpret(T.call_llvm_pure_intrin(vec_h, srlw, T.reinterpret(a, dtype=vec_h), T.int32(4)), dtype=vec_i)
            bh = T.reinterpret(T.call_llvm_pure_intrin(vec_h, srlw, T.reinterpret(b, dtype=vec_h), T.int32(4)), dtype=vec_i)
            hi = T.call_llvm_pure_intrin(vec_i, ternlog, ah, bh, nib, T.int32(0x28))
            counts = (T.call_llvm_pure_intrin(vec_s, pshufb, table, T.reinterpret(lo, dtype=vec_s))
                      + T.call_llvm_pure_intrin(vec_s, pshufb, table, T.reinterpret(hi, dtype=vec_s)))
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                vec_c, dot, C.vload([0], dtype=vec_c), counts, T.broadcast(T.int8(1), lanes * 4))

    TensorIntrin.register(name, desc, impl_bytes if byte_dot else impl)
    return name


THRESHOLD_LIMIT = 2**30  # |acc| and |thr| stay below this, so thr - 1 - acc cannot overflow


def lanes_to_bits_intrin(lanes: int, movmsk: bool) -> str:
    """``C[0] += sum_i (A[i] >= T[i]) << i``: a threshold's lane tile as a bit field.

    With ``movmsk`` (x86 AVX) the comparison is the sign of ``T - 1 - A`` (exact while both
    stay below ``THRESHOLD_LIMIT``, which the kernels guarantee) gathered 8 lanes at a time by
    ``vmovmskps``; otherwise the bits are assembled one by one.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    name = f"robustq.lanes_to_bits_{lanes}" + ("_movmsk" if movmsk else "")
    if TensorIntrin.get(name, allow_missing=True) is not None:
        return name
    vec = f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
             Th: T.Buffer((lanes,), "int32", offset_factor=1),
             C: T.Buffer((1,), "uint32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:1], Th[0:lanes], A[0:lanes])
            T.writes(C[0:1])
            for i in T.serial(0, lanes):
                with T.sblock("update"):
                    vi = T.axis.remap("R", [i])
                    C[0] = C[0] + T.if_then_else(Th[vi] <= A[vi], T.uint32(1) << T.cast(vi, "uint32"), T.uint32(0))

    if movmsk:
        halves = lanes // 8
        msk = T.llvm_lookup_intrinsic_id("llvm.x86.avx.movmsk.ps.256")

        @T.prim_func(s_tir=True)
        def impl(A: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
                 Th: T.Buffer((lanes,), "int32", offset_factor=1),
                 C: T.Buffer((1,), "uint32", offset_factor=1, scope="local")) -> None:
            with T.sblock("root"):
                T.reads(C[0:1], Th[0:lanes], A[0:lanes])
                T.writes(C[0:1])
                for h in T.unroll(halves):
                    C[0] = C[0] + (T.cast(T.call_llvm_pure_intrin(
                        "int32", msk,
                        T.reinterpret(Th.vload([h * 8], dtype="int32x8") - T.broadcast(T.int32(1), 8)
                                      - A.vload([h * 8], dtype="int32x8"), dtype="float32x8")), "uint32")
                        << T.cast(h * 8, "uint32"))
    else:
        @T.prim_func(s_tir=True)
        def impl(A: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
                 Th: T.Buffer((lanes,), "int32", offset_factor=1),
                 C: T.Buffer((1,), "uint32", offset_factor=1, scope="local")) -> None:
            with T.sblock("root"):
                T.reads(C[0:1], Th[0:lanes], A[0:lanes])
                T.writes(C[0:1])
                for i in T.unroll(lanes):
                    C[0] = C[0] + T.if_then_else(A[i] >= Th[i], T.uint32(1) << T.cast(i, "uint32"), T.uint32(0))

    TensorIntrin.register(name, desc, impl)
    return name
