"""Measure the register tiles of the example models' kernels on this machine and write records.

    python bench/tile_records.py OUT.json [--models mnist-cnn,resnet20,mnist-bnn] [--batch 16]

Every kernel of each example network (built from its calibrated twin for this CPU) is timed
with each candidate tile (:func:`robustq_deploy.kernels.records.tune_tile`); the fastest go to
``OUT.json``, keyed by kernel family, spec and LLVM ``mcpu``. A target description that names a
folder holding such files (``tile_records``, e.g. ``targets/records/`` of ``targets/x86.toml``)
makes ``robustq compile`` build with those tiles on that CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> None:
    from robustq_deploy.compile.fused.from_twin import from_twin
    from robustq_deploy.kernels.features import host_target
    from robustq_deploy.kernels.records import Records, tune_network
    from robustq_deploy.manifest import atomic_write_text
    from robustq_deploy.models.examples import example_twin

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--models", default="mnist-cnn,resnet20,mnist-bnn")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args(argv)
    target = host_target()
    records = Records.load(args.out)
    for arch in args.models.split(","):
        net = from_twin(example_twin(arch), target)
        tune_network(net, target, records, args.batch, progress=lambda m: print(f"{arch} {m}", file=sys.stderr))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, records.to_json())


if __name__ == "__main__":
    main()
