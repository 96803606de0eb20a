"""Kernel families by op, and selection by target features: the API compile paths use.

A family is registered with ``@register_kernel(name, op, spec_type, dtypes, ...)`` on a
function ``build(spec, ctx, tile, parallel) -> PrimFunc``; it also names its tile candidates,
its compile-time ``pack`` of constant operands and its numpy ``reference``. :func:`lookup` returns the family that implements an op for input dtypes,
refusing unknown ops explicitly (:class:`~robustq_deploy.errors.UnsupportedError`); the
:class:`KernelContext` of a target says how each family lowers there (dot-product instruction or
vector fallback, popcount lanes), so one spec builds for x86 with VNNI, x86 without it, and
AArch64 with or without the dot-product extension.

Families (op: dtypes):

=================  ===============  ====================================================
``conv2d``         u8/s8 x s8       :mod:`robustq_deploy.kernels.int8_conv2d` (fused pool + epilogue)
``dense``          u8/s8 x s8       :mod:`robustq_deploy.kernels.int8_dense`
``binary_conv2d``  bits x bits      :mod:`robustq_deploy.kernels.binary` (XNOR + popcount)
``binary_dense``   bits x bits      :mod:`robustq_deploy.kernels.binary`
``quantize``       f32 -> u8/s8     :mod:`robustq_deploy.kernels.edges` (input quantizer, first-layer unfold)
``avgpool``        u8/s8            :mod:`robustq_deploy.kernels.edges` (global average pool + requant)
=================  ===============  ====================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UnsupportedError
from ..registry import Registry

from . import binary, edges, int8_conv2d, int8_dense
from .features import Features, features_of
from .schedule import Lowering, Tile, divisors, lowering_for


@dataclass(frozen=True)
class KernelContext:
    """How kernels lower on one target."""

    features: Features
    lowering: Lowering
    bits: binary.BitLowering

    @classmethod
    def for_features(cls, f: Features) -> "KernelContext":
        return cls(f, lowering_for(f), binary.bit_lowering(f))

    @classmethod
    def for_target(cls, target) -> "KernelContext":
        """The context of a ``tvm.target.Target`` (its features as LLVM reports them)."""
        return cls.for_features(features_of(target))


@dataclass(frozen=True)
class KernelFamily:
    name: str
    op: str
    dtypes: tuple[tuple[str, ...], ...]  # accepted (input, weight) dtype pairs
    spec_type: type
    build: Callable[..., Any]  # (spec, ctx, tile, parallel=True) -> scheduled PrimFunc
    candidates: Callable[[Any, KernelContext], list[Tile]]
    pack: Callable[..., Any] | None = None  # the module's compile-time operand packing
    reference: Callable[..., Any] | None = None  # the module's numpy reference


KERNELS: Registry[KernelFamily] = Registry("kernel family")


def register_kernel(name: str, op: str, spec_type: type, dtypes: tuple[tuple[str, ...], ...],
                    candidates: Callable[[Any, KernelContext], list[Tile]] | None = None,
                    pack: Callable[..., Any] | None = None, reference: Callable[..., Any] | None = None):
    def deco(build):
        KERNELS.add(name, KernelFamily(name, op, dtypes, spec_type, build, candidates or (lambda spec, ctx: []),
                                       pack, reference))
        return build
    return deco


def lookup(op: str, dtypes: tuple[str, ...], features: Features | None = None) -> KernelFamily:
    """The kernel family for ``op`` on inputs of ``dtypes`` (e.g. ``("uint8", "int8")``).

    Every family runs on every supported CPU (with a vector fallback where the dot-product or
    popcount instruction is missing); ``features`` is accepted so a future family that needs an
    instruction can be skipped on targets without it.
    """
    for fam in KERNELS.values():
        if fam.op == op and tuple(dtypes) in fam.dtypes:
            return fam
    ops = sorted({f.op for f in KERNELS.values()})
    if op not in ops:
        raise UnsupportedError(f"no kernel for op {op!r}; kernels exist for {', '.join(ops)}")
    raise UnsupportedError(f"no {op} kernel for dtypes {tuple(dtypes)}")


def _pixel_tiles(width: int, oc_tiles: int, pool: int, multiple: int, rows: tuple[int, ...] = (0,)) -> list[Tile]:
    """Register tiles that fit the vector registers, the largest few (small tiles reload
    weights too often to win), crossed with rows-per-task choices."""
    tiles = sorted({(pool * pool * p * o, p, o) for p in divisors(width) for o in divisors(oc_tiles)
                    if o % multiple == 0 and pool * pool * p * o <= 28}, reverse=True)[:4]
    return [Tile(p, o, r) for _, p, o in tiles for r in rows]


INT8 = (("uint8", "int8"), ("int8", "int8"))
BITS = (("bits", "bits"),)


def _conv_tiles(s: int8_conv2d.Conv2d, ctx: KernelContext) -> list[Tile]:
    lanes = ctx.lowering.lanes
    threshold = isinstance(s.epilogue, int8_conv2d.E.Threshold)
    return _pixel_tiles(s.out_hw[1], int8_conv2d.E.acc_channels(s.epilogue, s.out_channels, lanes) // lanes, s.pool,
                        int8_conv2d.choose_tile(s, ctx.lowering).oc_blocks if threshold else 1, rows=(0, 1))


def _dense_tiles(s: int8_dense.Dense, ctx: KernelContext) -> list[Tile]:
    tiles = int8_dense.E.acc_channels(s.epilogue, s.out_channels, ctx.lowering.lanes) // ctx.lowering.lanes
    return [Tile(1, o) for o in divisors(tiles) if o <= 16]


def _binary_conv_tiles(s: binary.BinaryConv2d, ctx: KernelContext) -> list[Tile]:
    lanes = ctx.bits.lanes
    return _pixel_tiles(s.out_hw[1], binary.E.acc_channels(s.epilogue, s.out_channels, lanes) // lanes, s.pool,
                        binary._tile_multiple(s, lanes))


@register_kernel("conv2d", "conv2d", int8_conv2d.Conv2d, INT8, candidates=_conv_tiles,
                 pack=int8_conv2d.pack, reference=int8_conv2d.reference)
def _conv(spec, ctx: KernelContext, tile, parallel: bool = True):
    return int8_conv2d.build(spec, ctx.lowering, tile, parallel=parallel)


@register_kernel("dense", "dense", int8_dense.Dense, INT8, candidates=_dense_tiles,
                 pack=int8_dense.pack, reference=int8_dense.reference)
def _dense(spec, ctx: KernelContext, tile, parallel: bool = True):
    return int8_dense.build(spec, ctx.lowering, tile, parallel=parallel)


@register_kernel("binary_conv2d", "binary_conv2d", binary.BinaryConv2d, BITS, candidates=_binary_conv_tiles,
                 pack=binary.pack_conv, reference=binary.reference_conv)
def _bconv(spec, ctx: KernelContext, tile, parallel: bool = True):
    return binary.build_conv(spec, ctx.bits, tile, parallel=parallel)


@register_kernel("binary_dense", "binary_dense", binary.BinaryDense, BITS,
                 pack=binary.pack_dense, reference=binary.reference_dense)
def _bdense(spec, ctx: KernelContext, tile, parallel: bool = True):
    return binary.build_dense(spec, ctx.bits, tile, parallel=parallel)


@register_kernel("quantize", "quantize", edges.QuantizeInput, (("float32",),), reference=edges.quantize_reference)
def _quantize(spec, ctx: KernelContext, tile, parallel: bool = True):
    return edges.build_quantize(spec, parallel=parallel)


@register_kernel("avgpool", "global_avgpool", edges.GlobalAvgPool, (("uint8",), ("int8",)),
                 pack=edges.pack_avgpool, reference=edges.avgpool_reference)
def _avgpool(spec, ctx: KernelContext, tile, parallel: bool = True):
    return edges.build_avgpool(spec, parallel=parallel)
