"""The shipped tile records reach what ``robustq compile`` builds: every kernel of the example
models' compile-built networks (their ``integer`` / ``packed`` exports) that has a choice of tile
finds its record for the records' CPU, and the same network built from the twin
(``bench/latency.py``'s twin row) gets the same tile at every node, so the benchmark's rows
measure the tiles ``robustq compile`` uses."""
import importlib.util
import sys
from pathlib import Path

import pytest

from robustq_deploy.compile.fused import tile_records
from robustq_deploy.compile.fused.network import tiles_used
from robustq_deploy.kernels.registry import KERNELS
from robustq_deploy.models.examples import EXAMPLE_SHAPES
from robustq_deploy.targets import get_target

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tile_records", REPO / "bench" / "tile_records.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("arch", sorted(EXAMPLE_SHAPES))
def test_shipped_records_cover_what_compile_builds(bench, arch):
    desc = get_target("x86:cascadelake")  # the CPU the shipped records were measured on
    target = desc.tvm_target()
    records = tile_records(desc)
    compiled, twin = bench.example_networks(arch, target)
    tunable = [n.name for n in compiled.nodes if len(KERNELS[n.kernel].candidates(n.spec, compiled.ctx)) > 1]
    chosen = tiles_used(compiled, target, records)
    assert tunable and sorted(chosen) == sorted(tunable), [n for n in tunable if n not in chosen]
    assert [n.kernel for n in twin.nodes] == [n.kernel for n in compiled.nodes]
    assert list(tiles_used(twin, target, records).values()) == list(chosen.values())
