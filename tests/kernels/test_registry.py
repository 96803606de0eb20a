"""Kernel selection, CPU features, shipped tuning records."""
from __future__ import annotations

import pytest
import tvm

from robustq_deploy.kernels import int8_conv2d as C
from robustq_deploy.kernels.features import Features, features_of
from robustq_deploy.kernels.records import Records, spec_key
from robustq_deploy.targets import get_target
from robustq_deploy.kernels.registry import KERNELS, KernelContext, lookup
from robustq_deploy.kernels.schedule import Tile, default_tile, lowering_for
from robustq_deploy.errors import UnsupportedError


def test_lookup_by_op_and_dtypes():
    assert lookup("conv2d", ("uint8", "int8")).name == "conv2d"
    assert lookup("conv2d", ("int8", "int8")).name == "conv2d"
    assert lookup("binary_dense", ("bits", "bits")).name == "binary_dense"
    with pytest.raises(UnsupportedError, match="no kernel for op 'softmax'"):
        lookup("softmax", ("float32",))
    with pytest.raises(UnsupportedError, match="no conv2d kernel for dtypes"):
        lookup("conv2d", ("int16", "int8"))


@pytest.mark.parametrize("spec,want", [
    ({"kind": "llvm", "mcpu": "cascadelake"}, dict(vnni=True, vpopcntdq=False, int8_dot="vnni")),
    ({"kind": "llvm", "mcpu": "znver4"}, dict(vnni=True, vpopcntdq=True, popcount="vpopcntdq")),
    ({"kind": "llvm", "mcpu": "skylake-avx512"}, dict(vnni=False, int8_dot="none")),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]}, dict(dotprod=True, int8_dot="sdot")),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}, dict(dotprod=False, int8_dot="none", popcount="cnt")),
])
def test_features_follow_the_target_not_the_host(spec, want):
    f = features_of(spec)
    for k, v in want.items():
        assert getattr(f, k) == v, k


def test_lowerings():
    assert lowering_for(Features("x86_64", avx2=True, avx512=True, vnni=True)).intrin.llvm == "llvm.x86.avx512.vpdpbusd.512"
    arm = lowering_for(Features("aarch64", neon=True, dotprod=True))
    assert (arm.lanes, arm.act_dtype) == (4, "int8")
    assert not lowering_for(Features("x86_64", avx2=True)).native


def test_default_tile_fits_registers():
    t = default_tile(14, 4, pool=2)
    assert 4 * t.pixels * t.oc_blocks <= 24 and 14 % t.pixels == 0 and 4 % t.oc_blocks == 0
    assert default_tile(7, 8, oc_multiple=2).oc_blocks % 2 == 0


def test_records_round_trip_and_shipped_file(tmp_path):
    ctx = KernelContext.for_target(tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"}))
    spec = C.Conv2d(8, 8, 16, 16, (3, 3), 1, 1, C.L.Storage("uint8"), 0, C.E.Dequant())
    rec = Records()
    target = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})
    rec.add("conv2d", spec, target, Tile(4, 1, 2))
    path = tmp_path / "r.json"
    path.write_text(rec.to_json())
    back = Records.load(path, tmp_path / "missing.json")
    assert back.tile("conv2d", spec, target) == Tile(4, 1, 2)
    assert back.tile("conv2d", spec, tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})) is None
    files = get_target("x86").tile_record_files()  # the x86 target's records (package data)
    assert [f.name for f in files] == ["x86-cascadelake.json"]
    shipped = Records.load(*files)
    assert len(shipped.entries) >= 10
    for (kernel, key, cpu), tile in shipped.entries.items():  # every record names a real kernel and tile
        assert kernel in KERNELS and cpu and tile.pixels >= 1 and tile.oc_blocks >= 1
    # the key leaves out fields at their defaults: a field added later keeps old records valid
    assert spec_key(spec) == ("Conv2d(height=8, width=8, in_channels=16, out_channels=16, kernel=(3, 3), stride=1, "
                              "pad=1, input=Storage(dtype='uint8'), pad_value=0, epilogue=Dequant())")
    assert ctx.lowering.lanes == 16
