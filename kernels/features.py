"""CPU features of a TVM target, reduced to what kernel selection needs.

Kernels are chosen by what the *target* CPU can execute, never by the build machine alone:
``features_of(target)`` asks LLVM which features the target's ``mcpu``/``mattr`` imply
(``mcpu = "host"`` is resolved by :class:`targets.TargetDesc` before it gets here). A CI machine
may be a znver4 (VNNI and VPOPCNTDQ), this one a cascadelake (VNNI, no VPOPCNTDQ), an aarch64
board with or without the dot-product extension; each gets the kernels its instructions allow.

To support a new instruction set, add a field here, set it in :func:`features_of`, and register
kernels that require it in :mod:`robustq_deploy.kernels.registry`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Features:
    """Instruction-set facts that decide which kernel implementation is valid and fastest."""

    arch: str  # "x86_64" or "aarch64"
    avx2: bool = False
    avx512: bool = False  # AVX-512 F + BW: 512-bit integer vectors
    vnni: bool = False  # AVX512-VNNI vpdpbusd (u8 x s8 -> s32, 4-wide dot products)
    vpopcntdq: bool = False  # AVX512-VPOPCNTDQ: vector popcount on 32/64-bit lanes
    bitalg: bool = False  # AVX512-BITALG: vector popcount on 8/16-bit lanes
    neon: bool = False
    dotprod: bool = False  # ARMv8.2 sdot/udot (s8 x s8 / u8 x u8 -> s32, 4-wide)

    @property
    def int8_dot(self) -> str:
        """The 4-wide int8 dot-product instruction family kernels tensorize with."""
        if self.arch == "x86_64" and self.vnni:
            return "vnni"
        if self.arch == "aarch64" and self.dotprod:
            return "sdot"
        return "none"

    @property
    def popcount(self) -> str:
        """How a vector popcount will be emitted (informational; LLVM picks the sequence)."""
        if self.arch == "aarch64":
            return "cnt" if self.neon else "scalar"
        if self.vpopcntdq:
            return "vpopcntdq"
        if self.bitalg:
            return "vpopcntb"
        return "vpshufb" if self.avx512 else "popcnt"


def features_of(target) -> Features:
    """Features of a ``tvm.target.Target`` (kind ``llvm``) or of a target spec dict."""
    import tvm
    from tvm.target import codegen

    if isinstance(target, dict):
        target = tvm.target.Target(target)
    triple = str(target.attrs.get("mtriple", "")) or codegen.llvm_get_system_triple()
    feats = set(codegen.llvm_get_cpu_features(target))
    if triple.startswith("aarch64"):
        return Features(arch="aarch64", neon="neon" in feats or "fp-armv8" in feats,
                        dotprod="dotprod" in feats)
    return Features(
        arch="x86_64",
        avx2="avx2" in feats,
        avx512="avx512f" in feats and "avx512bw" in feats,
        vnni="avx512vnni" in feats,
        vpopcntdq="avx512vpopcntdq" in feats,
        bitalg="avx512bitalg" in feats,
    )


def host_target(num_cores: int | None = None):
    """The ``tvm.target.Target`` of this machine's CPU (LLVM's detected ``mcpu``)."""
    import tvm
    from tvm.target import codegen

    spec = {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu()}
    if num_cores:
        spec["num-cores"] = num_cores
    return tvm.target.Target(spec)
