"""The host library of an fpga-sim build has the same bytes in every run, with a symbolic batch.

TVM's ``VMShapeLower`` computes the sizes derived from the batch ``N`` (one per offloaded
layer's output) in a ``shape_func`` whose stores come out in an order that depends on the
address of ``N``; :func:`robustq_deploy.compile.build.order_shape_stores` puts them in heap-slot
order. Each build here starts from a freshly made module (a new ``N``), as every compile does.
"""
from __future__ import annotations

import pytest

from robustq_deploy.compile.build import build, export_library, independent_stores_in_order, lower, relax_pipeline
from robustq_deploy.targets import get_target


def host_module():
    """A partitioned host module as :mod:`robustq_deploy.accel.partition` makes it of mnist-cnn:
    symbolic batch, each layer a ``call_dps_packed("fpga_<layer>")``, the logits cast to float.
    Each differently sized value gives the shape function one more size to compute."""
    from tvm import relax, tirx

    n = tirx.Var("N", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("input", relax.TensorType((n, 1, 28, 28), "uint8"))

    def layer(name, h, shape, dtype="int8"):
        return bb.emit(relax.call_dps_packed(f"fpga_{name}", [h], relax.TensorType((n, *shape), dtype)))

    with bb.function("main", [x], {"num_input": 1}):
        with bb.dataflow():
            h = layer("conv1", x, (32, 14, 14))
            h = layer("conv2", h, (64, 7, 7))
            h = bb.emit(relax.op.reshape(h, (n, 64 * 7 * 7)))
            h = layer("fc1", h, (128,))
            h = layer("fc2", h, (10,), "int32")
            out = bb.emit_output(relax.op.astype(h, "float32"))
        bb.emit_func_output(out)
    return bb.get()


def shape_store_slots(mod) -> list[list[int]]:
    """Heap slots written by each host shape function of a module after the Relax pipeline."""
    from tvm import tirx

    out = []
    for gv, f in mod.functions.items():
        if isinstance(f, tirx.PrimFunc) and gv.name_hint.startswith("shape_func"):
            stores = f.body.seq if isinstance(f.body, tirx.SeqStmt) else [f.body]
            out.append([int(s.indices[0]) for s in stores])
    return out


def test_host_library_bytes_do_not_depend_on_the_run(tmp_path):
    desc = get_target("fpga-sim")
    libs = []
    for i in range(3):
        lowered = lower(host_module(), desc)
        with desc.tvm_target():
            slots = shape_store_slots(relax_pipeline()(lowered))
        assert len(slots) == 1 and len(slots[0]) >= 5  # several sizes: the case that needs ordering
        assert slots[0] == sorted(slots[0])
        lib = tmp_path / f"model{i}.so"
        export_library(build(lowered, desc), lib, desc)
        libs.append(lib.read_bytes())
    assert all(b == libs[0] for b in libs[1:])


def heap_ops():
    """``store(slot, value)`` and ``load(slot)`` on a shape heap ``H``, and a second buffer."""
    from tvm import tirx

    heap, other = tirx.decl_buffer((4,), "int64", "H"), tirx.decl_buffer((4,), "int64", "G")

    def store(slot: int, value, buffer=heap):
        return tirx.BufferStore(buffer, value, [tirx.IntImm("int64", slot)])

    def load(slot: int):
        return tirx.BufferLoad(heap, [tirx.IntImm("int64", slot)])

    return store, load, other


def test_independent_stores_are_sorted():
    from tvm import tirx

    store, load, _ = heap_ops()
    body = tirx.SeqStmt([store(3, load(0) * 40), store(1, load(0) * 784), store(2, load(0) * 10 + 1)])
    assert [int(s.indices[0]) for s in independent_stores_in_order(body).seq] == [1, 2, 3]


@pytest.mark.parametrize("case", ["reads a written slot", "two buffers", "same slot twice", "not only stores"])
def test_stores_whose_order_matters_are_left_alone(case):
    from tvm import tirx

    store, load, other = heap_ops()
    bodies = {
        "reads a written slot": [store(3, load(0) * 2), store(1, load(3) + 1)],
        "two buffers": [store(3, load(0) * 2), store(1, load(0) + 1, buffer=other)],
        "same slot twice": [store(3, load(0) * 2), store(3, load(0) + 1)],
        "not only stores": [store(3, load(0) * 2), tirx.Evaluate(tirx.IntImm("int32", 0))],
    }
    body = tirx.SeqStmt(bodies[case])
    assert independent_stores_in_order(body).same_as(body)
