"""A CPU schedule for the functions between the kernels when the compile stage lowers per op.

With the kernel library on, the compile stage's convolutions and matrix products are scheduled
kernels (:mod:`robustq_deploy.compile.tiled`), but the ops between them (requantization chains, max
pooling, the input quantizer, reshapes) come out of TVM's legalization unscheduled: one block
per elementwise op, each writing a whole int64 intermediate tensor, on a single thread. On the
MNIST CNN at batch 64 those cost more than the kernels. :func:`schedule_between_kernels`
inlines every elementwise producer into its consumer (one pass over memory, no intermediates)
and runs the outer spatial loops of what remains in parallel, leaving the innermost loop for
LLVM to vectorize. Scheduling never changes the integers a function computes.

Functions already scheduled (the kernels, tuned functions: attribute ``tirx.is_scheduled``) are
left alone, and a function the schedule cannot handle is kept as it was.
"""
from __future__ import annotations


def _spatial_prefix(sch, block, loops) -> int:
    """How many outer loops of ``block`` bind only its data-parallel iterators."""
    iters = sch.get(block).iter_vars
    n = 0
    for loop, it in zip(loops, iters):
        if int(it.iter_type) != 0:  # 0: data parallel
            break
        n += 1
    return n


def schedule_func(func):
    """``func`` with producers inlined and outer spatial loops parallel (None: not handled)."""
    from tvm.s_tir import Schedule

    sch = Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for b in blocks[:-1]:
        try:
            sch.compute_inline(b)
        except Exception:  # noqa: BLE001  (a reduction or non-inlinable producer stays a block)
            pass
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(b)
        n = _spatial_prefix(sch, b, loops)
        if n >= 2:  # keep the innermost spatial loop serial for vectorization
            outer = sch.fuse(*loops[:n - 1]) if n > 2 else loops[0]
            sch.parallel(outer)
        elif n == 1 and len(loops) > 1:
            sch.parallel(loops[0])
    return sch.mod["main"]


def schedule_between_kernels(mod):
    """``mod`` (a lowered Relax module) with every unscheduled PrimFunc scheduled for a CPU."""
    import tvm

    for gv, f in list(mod.functions.items()):
        if not isinstance(f, tvm.tirx.PrimFunc) or (f.attrs is not None and f.attrs.get("tirx.is_scheduled")):
            continue
        try:
            new = schedule_func(f)
        except Exception:  # noqa: BLE001  (keep the legalized function)
            continue
        mod[gv] = new.with_attr("tirx.is_scheduled", True)
    return mod
