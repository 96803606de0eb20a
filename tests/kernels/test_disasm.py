"""The built code uses the intended instructions: vpdpbusd (x86 VNNI), sdot (AArch64), and a
vector popcount (vpopcntd with VPOPCNTDQ, vpshufb nibble tables without, cnt on NEON)."""
from __future__ import annotations

import re

import pytest
import tvm

from robustq_deploy.kernels import binary as B
from robustq_deploy.kernels import disasm
from robustq_deploy.kernels import epilogue as E
from robustq_deploy.kernels import int8_conv2d as C
from robustq_deploy.kernels.features import features_of
from robustq_deploy.kernels.registry import KernelContext

AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod"]}


def asm_of(spec_dict, binary: bool) -> str:
    target = tvm.target.Target(spec_dict)
    ctx = KernelContext.for_target(target)
    st = C.L.storage_for(False, ctx.lowering.act_dtype)
    if binary:
        func = B.build_conv(B.BinaryConv2d(8, 8, 64, 32, (3, 3), 1, E.Threshold()), ctx.bits)
    else:
        func = C.build(C.Conv2d(8, 8, 32, 32, (3, 3), 1, 1, st, st.offset, E.Requant((E.QuantOut(0, 0, 255, st),))),
                       ctx.lowering)
    return tvm.tirx.build(tvm.IRModule({"main": func}), target=target).inspect_source("asm")


def mnemonics(asm: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\s+([a-z][\w.]*)", asm, re.M)}


@pytest.mark.parametrize("spec,binary,want", [
    ({"kind": "llvm", "mcpu": "cascadelake"}, False, {"vpdpbusd"}),
    ({"kind": "llvm", "mcpu": "cascadelake"}, True, {"vpshufb", "vpdpbusd"}),
    ({"kind": "llvm", "mcpu": "znver4"}, True, {"vpopcntd"}),
    (AARCH64, False, {"sdot"}),
    (AARCH64, True, {"cnt"}),
])
def test_instructions(spec, binary, want):
    assert want <= mnemonics(asm_of(spec, binary))


def test_expected_groups_and_library_check(tmp_path):
    host = {"kind": "llvm", "mcpu": "cascadelake"}
    f = features_of(host)
    assert disasm.expected(f, binary=True) == {"int8 dot product": ("vpdpbusd",), "popcount": ("vpshufb",)}
    if disasm.objdump_for("x86_64") is None:
        pytest.skip("objdump not installed")
    lib = tmp_path / "k.so"
    ctx = KernelContext.for_target(tvm.target.Target(host))
    st = C.L.storage_for(False, ctx.lowering.act_dtype)
    func = C.build(C.Conv2d(8, 8, 32, 32, (3, 3), 1, 1, st, 0, E.Requant((E.QuantOut(0, 0, 255, st),))), ctx.lowering)
    tvm.tirx.build(tvm.IRModule({"main": func}), target=tvm.target.Target(host)).export_library(str(lib))
    rec = disasm.check(lib, f, binary=False)
    assert rec["ok"] and rec["groups"]["int8 dot product"]["vpdpbusd"] > 0
