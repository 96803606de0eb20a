"""Schedule pieces shared by the integer kernels: the lowering for a CPU and the register tile.

A :class:`Lowering` says how one CPU computes a 4-wide int8 dot product: the number of int32
lanes an instruction fills (16 for ``vpdpbusd`` on zmm, 4 for ``sdot``), the tensor intrinsic
(or None: plain vectorized multiply-add), and the storage dtype activations must have for it.

A :class:`Tile` is the tunable part of a schedule: how many output pixels (or batch rows) and
how many lane tiles of output channels one register tile holds. ``pixels x oc_blocks``
accumulator vectors stay in registers for the whole reduction, so each weight vector is loaded
once per ``pixels`` instructions and each broadcast activation once per ``oc_blocks``.
Tile records (:mod:`.records`, named by a target description) choose tiles per layer shape;
without a record, :func:`default_tile` picks the largest tile that fits the register file.
"""
from __future__ import annotations

from dataclasses import dataclass

from .features import Features
from .intrin import INTRINSICS, DotIntrin, ensure_registered, generic_intrin

ACC_REGISTERS = 24  # accumulators in one tile: 32 zmm (or NEON q) registers minus operands


@dataclass(frozen=True)
class Lowering:
    intrin: DotIntrin  # the dot-product instruction, or the plain-vector fallback
    movmsk: bool = False  # x86 AVX: threshold bits gathered with vmovmskps

    @property
    def lanes(self) -> int:
        return self.intrin.lanes

    @property
    def act_dtype(self) -> str:
        """Storage dtype of 8-bit activations ("uint8" for vpdpbusd, "int8" for sdot)."""
        return self.intrin.act_dtype

    @property
    def native(self) -> bool:
        """Whether a dot-product instruction (not the vector fallback) computes the tile."""
        return bool(self.intrin.llvm)


def lowering_for(features: Features) -> Lowering:
    dot = features.int8_dot
    movmsk = features.arch == "x86_64" and features.avx2
    if dot != "none":
        ensure_registered()
        return Lowering(INTRINSICS[dot], movmsk)
    if features.arch == "aarch64":
        return Lowering(generic_intrin(4, "int8"))
    return Lowering(generic_intrin(16 if features.avx512 else 8, "uint8"), movmsk)


@dataclass(frozen=True)
class Tile:
    pixels: int  # output columns (conv) or batch rows (dense) per register tile
    oc_blocks: int  # lane tiles of output channels per register tile
    rows: int = 0  # output rows per parallel task (convolutions; 0: kernel default)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def default_tile(width: int, oc_tiles: int, pool: int = 1, registers: int = ACC_REGISTERS,
                 oc_multiple: int = 1) -> Tile:
    """Largest ``pixels x oc_blocks`` tile (pixels dividing ``width``, blocks dividing
    ``oc_tiles`` and a multiple of ``oc_multiple``) whose ``pool**2 * pixels * oc_blocks``
    accumulators fit ``registers``; ties prefer fewer channel blocks (more weight reuse)."""
    blocks = [d for d in divisors(oc_tiles) if d % oc_multiple == 0]
    best = Tile(1, blocks[0])
    best_key = (0, 0)
    for px in divisors(width):
        for ob in blocks:
            n = pool * pool * px * ob
            if n <= registers and (n, -ob) > best_key:
                best, best_key = Tile(px, ob), (n, -ob)
    return best


RAW_REGISTERS = 16  # accumulators of a tile whose epilogue is a float rescale (its constants need registers)


def reuse_tile(width: int, oc_tiles: int, registers: int = RAW_REGISTERS) -> Tile:
    """The ``pixels x oc_blocks`` tile (pixels dividing ``width``, blocks dividing ``oc_tiles``, at
    most ``registers`` accumulators) with the most dot products per load: each step loads
    ``pixels`` input groups and ``oc_blocks`` weight vectors for ``pixels * oc_blocks`` products.
    (A 7x7 layer: 7 x 2 instead of 1 x 16, which reloads every weight vector per pixel.)"""
    best, best_key = Tile(1, 1), (0.0, 0)
    for px in divisors(width):
        for ob in divisors(oc_tiles):
            n = px * ob
            key = (n / (px + ob), n)
            if n <= registers and key > best_key:
                best, best_key = Tile(px, ob), key
    return best


def dot_tile(sch, block, low: Lowering, reduce_outer: list, tile_loops: list, ol, group) -> None:
    """Finish a register tile of an accumulator block whose loops the caller has ordered as
    ``... reduce_outer..., tile_loops..., ol, group`` (``ol`` the lane loop, ``group`` the
    4-wide reduction).

    The reduction initialisation is split off and vectorized; the tile loops are unrolled so
    LLVM keeps every accumulator in a register; ``ol x group`` becomes one dot-product
    instruction (or four vector multiply-adds with the fallback intrinsic).
    """
    init = sch.decompose_reduction(block, reduce_outer[0] if reduce_outer else group)
    sch.tensorize(ol, low.intrin.name)
    sch.vectorize(sch.get_loops(init)[-1])
    for lp in tile_loops:
        sch.unroll(lp)



def batch_var():
    """The symbolic batch size of a kernel. int32, not Relax's int64: fused with int32 row
    indices it keeps loop bindings free of casts, which the schedule's affine analysis
    (``decompose_reduction`` under a fused loop) rejects. Kernels are called through the packed
    API, which reads the extent from the tensor's shape."""
    from tvm import tirx

    return tirx.Var("n", "int32")
