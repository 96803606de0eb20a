"""The tiled kernels plugged into ``robustq compile`` through its per-op hook: chosen for the ops
they cover, bit-exact with the generic lowering and the numpy reference, accumulators in registers.

Runs in a subprocess: registering implementations changes the process-wide registry, which
other test modules (the compile stage's own) must see untouched. Registered kernels are only
picked inside their library's scope: a compile that does not name the library (``generic
again``, after registration) picks the generic lowering.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm")
REPO = Path(__file__).resolve().parents[2]  # the subprocess imports the package from this checkout

SCRIPT = r'''
import json, re, numpy as np, onnx, tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from robustq_deploy.compile import tiled
from robustq_deploy.kernels import reference as R
from robustq_deploy.compile import CompileOptions, compile_model, prepare
from robustq_deploy.compile.build import build
from robustq_deploy.export.robustq_ops import DOMAIN, pack_binary
from robustq_deploy.targets import get_target

rng = np.random.default_rng(0)
w = rng.integers(-127, 128, (20, 5, 3, 3)).astype(np.int8)
conv = helper.make_graph(
    [helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])], "conv",
    [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 5, 9, 11])],
    [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
    [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(7, np.uint8), "xz")])
wd = rng.integers(-128, 128, (6, 1, 3, 3)).astype(np.int8)  # depthwise: asymmetric pads, stride 2 x 1
dw = helper.make_graph(
    [helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 0, 2, 1], strides=[2, 1], group=6)], "dw",
    [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 6, 9, 19])],
    [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
    [numpy_helper.from_array(wd, "w"), numpy_helper.from_array(np.array(131, np.uint8), "xz")])
wb = rng.choice([-1, 1], (12, 70))
nodes = [helper.make_node("GreaterOrEqual", ["x", "zero"], ["ge"]), helper.make_node("Where", ["ge", "one", "m1"], ["xb"]),
         helper.make_node("BinaryGemm", ["xb", "wp"], ["y"], domain=DOMAIN)]
gemm = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", 70])],
    [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
    [numpy_helper.from_array(pack_binary(wb), "wp"), numpy_helper.from_array(np.array(0, np.int8), "zero"),
     numpy_helper.from_array(np.array(1, np.int8), "one"), numpy_helper.from_array(np.array(-1, np.int8), "m1")])
desc = get_target("x86")
out = {}
from robustq_deploy.kernels import int8_depthwise as DW
dw_spec = DW.Depthwise(9, 19, 6, (3, 3), (2, 1), (1, 0, 2, 1), "uint8", 131)
shapes = {"conv": (5, 9, 11), "dw": (6, 9, 19)}
for name, g, opsets in (("conv", conv, [("", 21)]), ("dw", dw, [("", 21)]), ("gemm", gemm, [("", 21), (DOMAIN, 1)])):
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]); m.ir_version = 10
    results = {}
    for mode in ("generic", "tiled", "generic again"):
        libs = (tiled.enable(),) if mode == "tiled" else ()
        _, lowered, meta = compile_model(prepare(m), CompileOptions.of(desc, kernels=libs))
        ex = tvm.compile(lowered, target=desc.tvm_target(), tir_pipeline=tiled.tir_pipeline())
        vm = relax.VirtualMachine(ex, tvm.cpu())
        xs = {}
        for n in (1, 4):
            x = (rng.integers(0, 256, (n, *shapes[name])).astype(np.uint8) if name in shapes
                 else rng.integers(-128, 128, (n, 70)).astype(np.int8))
            y = vm["main"](tvm.runtime.tensor(x)).numpy()
            if name == "conv":
                want = R.conv2d_acc(x, w, None, 2, 1, 7)
            elif name == "dw":  # the kernel's reference, itself checked against a direct loop below
                want = DW.reference(dw_spec, x, wd)
            else:
                want = R.dense_acc(np.where(x >= 0, 1, -1), wb)
            xs[n] = bool(np.array_equal(y, want))
        asm = (ex.mod.imports[0] if ex.mod.imports else ex.mod).inspect_source("asm")
        results[mode] = {"implementations": meta["implementations"], "exact": xs,
                         "vpdpbusd": len(re.findall(r"vpdpbusd", asm))}
    out[name] = results
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def results():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_conv_uses_tiled_kernel_and_is_exact(results):
    r = results["conv"]
    assert r["generic"]["implementations"] == r["generic again"]["implementations"] == {"int_conv2d:generic": 1}
    assert r["tiled"]["implementations"] == {"int_conv2d:tiled": 1}
    assert all(r["generic"]["exact"].values()) and all(r["tiled"]["exact"].values())
    assert r["tiled"]["vpdpbusd"] > 0


def test_depthwise_conv_uses_tiled_kernel_and_is_exact(results):
    r = results["dw"]
    assert r["generic"]["implementations"] == {"int_conv2d:generic": 1}
    assert r["tiled"]["implementations"] == {"int_conv2d:tiled": 1}
    assert all(r["generic"]["exact"].values()) and all(r["tiled"]["exact"].values())


def test_depthwise_reference_is_a_grouped_convolution():
    """The depthwise kernel's numpy reference equals a direct per-tap loop of ONNX ConvInteger
    with ``group = channels`` (padding reads the zero point), so the kernel test above checks
    against the operator's meaning."""
    from robustq_deploy.kernels import int8_depthwise as DW

    rng = np.random.default_rng(5)
    spec = DW.Depthwise(7, 8, 3, (3, 2), (2, 3), (2, 1, 0, 1), "int8", -9)
    x = rng.integers(-128, 128, (2, 3, 7, 8)).astype(np.int8)
    w = rng.integers(-128, 128, (3, 1, 3, 2)).astype(np.int8)
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (2, 0), (1, 1)), constant_values=-9)
    oh, ow = spec.out_hw
    want = np.zeros((2, 3, oh, ow), np.int64)
    for n in range(2):
        for c in range(3):
            for y in range(oh):
                for xx in range(ow):
                    patch = xp[n, c, y * 2:y * 2 + 3, xx * 3:xx * 3 + 2]
                    want[n, c, y, xx] = np.sum((patch + 9) * w[c, 0])
    assert (oh, ow) == (4, 3)
    np.testing.assert_array_equal(DW.reference(spec, x, w), want)


def test_binary_gemm_uses_tiled_kernel_and_is_exact(results):
    r = results["gemm"]
    assert r["tiled"]["implementations"] == {"binary_gemm:tiled": 1}
    assert all(r["tiled"]["exact"].values())


def conv_model(w: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1], strides=[1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 3, 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["N", 9, 7, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(3, np.uint8), "xz")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def test_compile_stage_uses_the_kernels_by_default(tmp_path):
    """``robustq compile`` for x86 picks the tiled kernels its target lists without being asked,
    stays exact, schedules the functions between kernels, and leaves the generic lowering to
    callers that name no library (``kernels=()``)."""
    import onnx

    from robustq_deploy.kernels import reference as R
    from robustq_deploy.compile import compile_onnx, compile_stage
    from robustq_deploy.config import CompileConfig
    from robustq_deploy.runtime import load

    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (9, 3, 3, 3)).astype(np.int8)
    onnx.save(conv_model(w), str(tmp_path / "m.onnx"))
    art = compile_stage(tmp_path / "m.onnx", CompileConfig(target="x86"), tmp_path / "out")
    assert art.meta["implementations"] == {"int_conv2d:tiled": 1}
    assert art.meta["kernel_libraries"] == ["tiled"]
    x = rng.integers(0, 256, (5, 3, 7, 6)).astype(np.uint8)
    np.testing.assert_array_equal(load(art.file)(x), R.conv2d_acc(x, w, None, 1, 1, 3))
    meta = compile_onnx(conv_model(w), "x86", tmp_path / "generic.so", kernels=())
    assert meta["implementations"] == {"int_conv2d:generic": 1} and meta["kernel_libraries"] == []
