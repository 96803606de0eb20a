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


SCALAR_FLOAT_CONVERSIONS = re.compile(r"^\s+v?(cvtsi2ss|cvttss2si|cvtss2si)l?\b", re.M)


@pytest.mark.parametrize("mcpu", ["znver4", "cascadelake", "haswell"])
@pytest.mark.parametrize("form", ["graph input NCHW, 3x3", "NHWC, 1x1"])
def test_float_rescale_epilogue_is_vector_code(mcpu, form):
    """The float rescale fused into the per-op conv kernels (onnxruntime's QLinear*
    requantization) is vector code in the build the compile stage makes: an epilogue LLVM
    scalarizes (one scalar int/float conversion per value; 4x slower on MobileNetV2's first conv
    at batch 64) fails here, not only in a benchmark."""
    from robustq_deploy.compile.tiled import tir_pipeline

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    low = KernelContext.for_target(target).lowering
    st = C.L.storage_for(False, low.act_dtype)
    epi = E.Raw(E.FloatRequant(5, 0, 255, "uint8"))
    if form.startswith("graph"):
        spec = C.Conv2d(32, 32, 3, 32, (3, 3), 1, 1, st, 3, epi, source="uint8", out_channels_last=True)
    else:
        spec = C.Conv2d(16, 16, 24, 144, (1, 1), 1, 0, st, 3, epi, source="uint8", channels_last=True)
    lib = tvm.compile(tvm.IRModule({"main": C.build(spec, low, batch=4)}), target=target, tir_pipeline=tir_pipeline())
    asm = lib.mod.inspect_source("asm") if hasattr(lib, "mod") else lib.inspect_source("asm")
    scalar = SCALAR_FLOAT_CONVERSIONS.findall(asm)
    assert not scalar, f"{len(scalar)} scalar float conversions in the kernel"
    assert re.search(r"^\s+vcvtdq2ps\b", asm, re.M)
