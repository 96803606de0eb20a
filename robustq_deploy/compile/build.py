"""Lower, build and export a Relax module for a target description.

:func:`lower` legalizes the Relax operators into TIR and fuses them (TVM's ``zero`` pipeline,
under the target, with the tuning database applied when one is given); :func:`build` turns
that into a Relax VM executable; :func:`export_library` links it into a shared library with
the target's compiler (the Debian cross gcc for aarch64) and writes it atomically.

Libraries are deterministic: the same module and target give the same bytes (the tests check
it), because the code generator and the linker get the same inputs and no time stamps. One
input needs help: with a symbolic dimension (the batch ``N``), TVM's ``VMShapeLower`` computes
the shapes derived from it (``784 * N`` ...) in a ``shape_func`` whose stores it emits in the
iteration order of a hash map keyed by expressions, and those hash the free variable ``N`` by
its address, so the order changes from run to run. :func:`build` therefore runs TVM's default
Relax pipeline followed by :func:`order_shape_stores`, which puts such stores in heap-slot order.
"""
from __future__ import annotations

from pathlib import Path

from ..manifest import atomic_path


def lower(mod, desc, database=None):
    """Legalized, fused module (what :mod:`.inspect` examines and :func:`build` compiles); with
    a MetaSchedule ``database``, the tuned schedules replace the fused functions they cover."""
    from tvm import relax

    from .tune import tuning_target

    if database is None:
        with desc.tvm_target():
            return relax.get_pipeline("zero")(mod)
    with tuning_target(desc), database:
        return relax.get_pipeline("zero")(mod)


def independent_stores_in_order(body):
    """``body`` with its stores sorted by index, when it is a sequence of stores of one buffer at
    distinct constant indices that none of its values reads (so their order does not matter:
    what VMShapeLower emits); any other ``body`` is returned unchanged."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    if not isinstance(body, tirx.SeqStmt) or not all(isinstance(s, tirx.BufferStore) for s in body.seq):
        return body
    stores = list(body.seq)
    heap = stores[0].buffer

    def slot(buffer, indices) -> int | None:
        ok = buffer.same_as(heap) and len(indices) == 1 and isinstance(indices[0], tirx.IntImm)
        return int(indices[0]) if ok else None

    written = [slot(s.buffer, s.indices) for s in stores]
    read: list[int | None] = []

    def on_load(load, visitor):
        read.append(slot(load.source, load.indices))
        visitor.default_visit(load)

    for s in stores:
        tvm_ffi.structural_visit(s.value, [(tvm.ir.TensorLoad, on_load)])
    if None in written or None in read or len(set(written)) != len(written) or set(read) & set(written):
        return body
    return tirx.SeqStmt([s for _, s in sorted(zip(written, stores), key=lambda p: p[0])])


def order_shape_stores():
    """A pass: the shape computations of each host shape function in heap-slot order."""
    from tvm import tirx

    @tirx.transform.prim_func_pass(opt_level=0, name="robustq.OrderShapeStores")
    def _pass(func, _mod, _ctx):
        if func.attrs is None or not func.attrs.get("tirx.is_host_func", False):
            return func
        body = independent_stores_in_order(func.body)
        return func if body.same_as(func.body) else func.with_body(body)

    return _pass


def relax_pipeline():
    """TVM's default Relax build pipeline (what ``tvm.compile`` runs for a CPU target), then
    :func:`order_shape_stores`."""
    import tvm
    from tvm import relax

    return tvm.transform.Sequential([relax.get_pipeline("default"), order_shape_stores()])


def build(lowered, desc, tuned: bool = False, tir_pipeline: str | None = None):
    """A Relax VM executable of a lowered module (``tuned``: lowered with a tuning database;
    ``tir_pipeline``: a registered TIR pipeline name instead of TVM's default, e.g. the one the
    tiled kernels need, :func:`.tiled.tir_pipeline`)."""
    import tvm

    from .tune import tuning_target

    extra = {} if tir_pipeline is None else {"tir_pipeline": tir_pipeline}
    return tvm.compile(lowered, target=tuning_target(desc) if tuned else desc.tvm_target(),
                       relax_pipeline=relax_pipeline(), **extra)


def write_library(ex, path: str | Path, cross_compiler: str | None = None, suffix: str = ".so") -> None:
    """Write an executable as a shared library, atomically (linked by ``cross_compiler`` when
    given, e.g. ``aarch64-linux-gnu-gcc``)."""
    from tvm.support import cc

    kw = {"fcompile": cc.cross_compiler(cross_compiler)} if cross_compiler else {}
    with atomic_path(path) as tmp:
        lib_tmp = tmp.with_suffix(suffix)
        try:
            ex.export_library(str(lib_tmp), **kw)
            lib_tmp.replace(tmp)
        finally:
            lib_tmp.unlink(missing_ok=True)


def export_library(ex, path: str | Path, desc) -> None:
    """Write the executable as a shared library for target description ``desc``."""
    write_library(ex, path, desc.cross_compiler, desc.library_suffix)


__all__ = ["build", "export_library", "independent_stores_in_order", "lower", "order_shape_stores",
           "relax_pipeline", "write_library"]
