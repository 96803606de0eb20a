"""Measure the register tiles of the example models' kernels on this machine and write records.

    python bench/tile_records.py OUT.json [--models mnist-cnn,resnet20,mnist-bnn] [--batch 16]

Every kernel of each example network, as ``robustq compile`` builds it (the fused network of the
model's ``integer`` export, ``packed`` for the binary model: :func:`example_networks`), is timed
with each candidate tile (:func:`robustq_deploy.kernels.records.tune_tile`); the fastest go to
``OUT.json``, keyed by kernel family, spec and LLVM ``mcpu``. The same network built from the
model's twin (``bench/latency.py``'s twin row, the kernel tests) stores some activations with
another offset, so its spec can differ: each of its nodes gets the tile of the compile-built node
it stands for. A target description that names a folder holding such files (``tile_records``,
e.g. ``targets/records/`` of ``targets/x86.toml``) makes ``robustq compile`` build with those
tiles on that CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FORMATS = {"mnist-bnn": "packed"}  # each example's deployed form (int8 models: integer)


def example_networks(arch: str, target):
    """``(compiled, twin)``: the example's fused network as ``robustq compile`` builds it from its
    export, and as built from its twin, node for node."""
    from robustq_deploy.compile import prepare
    from robustq_deploy.compile.fused.from_onnx import from_onnx
    from robustq_deploy.compile.fused.from_twin import from_twin
    from robustq_deploy.export import export_model
    from robustq_deploy.models.examples import example_twin

    twin = example_twin(arch)
    model = export_model(twin, FORMATS.get(arch, "integer"), 21)
    return from_onnx(prepare(model).graph, target, model.graph.name or "onnx"), from_twin(twin, target)


def carry_to_twin(compiled, twin, target, records) -> int:
    """Record each compile-built node's tile under its twin-built node's spec too; returns how
    many twin specs were new."""
    added = 0
    for c, t in zip(compiled.nodes, twin.nodes, strict=True):
        tile = records.tile(c.kernel, c.spec, target)
        if tile is not None and c.kernel == t.kernel and records.tile(t.kernel, t.spec, target) is None:
            records.add(t.kernel, t.spec, target, tile)
            added += 1
    return added


def main(argv=None) -> None:
    from robustq_deploy.kernels.features import host_target
    from robustq_deploy.kernels.records import Records, tune_network
    from robustq_deploy.manifest import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--models", default="mnist-cnn,resnet20,mnist-bnn")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args(argv)
    target = host_target()
    records = Records.load(args.out)
    for arch in args.models.split(","):
        compiled, twin = example_networks(arch, target)
        tune_network(compiled, target, records, args.batch, progress=lambda m: print(f"{arch} {m}", file=sys.stderr))
        carry_to_twin(compiled, twin, target, records)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, records.to_json())


if __name__ == "__main__":
    main()
