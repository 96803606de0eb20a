"""The compile stage's fused path: the project's ONNX exports (int8 integer and QDQ, a ResNet-style
int8 model with residual adds and global pooling, the bit-packed binary model, models whose layer
widths fill no lane tile) built from the
file as one network of fused kernels, loaded back through ``robustq_deploy.load`` (manifest
checked) and bit-exact with the numpy integer reference of the file; graphs the patterns do not
cover are refused with the reason and compile per op."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from robustq_deploy.compile import compile_stage, prepare
from robustq_deploy.compile.fused import FUSED_PATH, PER_OP_PATH
from robustq_deploy.compile.fused.from_onnx import from_onnx
from robustq_deploy.config import CompileConfig, LayerQuantConfig, QuantConfig
from robustq_deploy.errors import UnsupportedError
from robustq_deploy.export import export_model
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.manifest import sha256_file
from robustq_deploy.runtime import load

from tests.compile.helpers import uint8_conv_model
from tests.kernels.conftest import calibrated_twin, odd_widths_twin

BNN = QuantConfig("binary", "binary", layers={"conv1": LayerQuantConfig(weight_bits=8)})
MODELS = {"mnist-cnn": ((1, 28, 28), QuantConfig()), "resnet20": ((3, 8, 8), QuantConfig()),
          "mnist-bnn": ((1, 28, 28), BNN), "mnist-small": ((1, 28, 28), QuantConfig()), "odd-widths": ((1, 8, 8), None)}


def export(arch: str, fmt: str, folder, seed: int = 0):
    """The project's ``fmt`` export of a seeded ``arch`` twin with calibrated ranges."""
    shape, quant = MODELS[arch]
    m = odd_widths_twin(shape, seed) if arch == "odd-widths" else calibrated_twin(arch, shape, quant, seed)
    path = folder / f"{arch}.{fmt}.onnx"
    onnx.save(export_model(m.eval(), fmt, 21), str(path))
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("from-onnx")
    return {(a, f): export(a, f, root) for a, f in
            [("mnist-cnn", "integer"), ("mnist-cnn", "qdq"), ("resnet20", "integer"), ("mnist-bnn", "packed"),
             ("mnist-small", "integer"), ("mnist-small", "qdq"), ("odd-widths", "integer")]}


def reference(path, x: np.ndarray) -> np.ndarray:
    sess = ReferenceSession(onnx.load(str(path)))
    return sess.run(None, {sess.input_names[0]: x})[0]


def check(exports, arch: str, fmt: str, out, kernels: dict, ref_fmt: str | None = None):
    art = compile_stage(exports[(arch, fmt)], CompileConfig(target="x86"), out)
    assert art.meta["compile_path"] == FUSED_PATH and art.meta["integer_only"]
    assert art.meta["kernels"] == kernels
    run = load(art.file)
    for n in (1, 9):
        x = np.random.default_rng(n).random((n, *MODELS[arch][0]), dtype=np.float32)
        # a QDQ file compiles with the project's fixed-point rescale: its integer twin's bits
        np.testing.assert_array_equal(run(x), reference(exports[(arch, ref_fmt or fmt)], x))
    return art


def test_mnist_cnn_integer_is_fused_exact_and_deterministic(exports, tmp_path):
    kernels = {"conv2d": 2, "dense": 2, "quantize": 1}
    art = check(exports, "mnist-cnn", "integer", tmp_path / "a", kernels)
    again = compile_stage(exports[("mnist-cnn", "integer")], CompileConfig(target="x86"), tmp_path / "b")
    assert sha256_file(art.file) == sha256_file(again.file)


def test_mnist_cnn_qdq_is_fused_and_exact(exports, tmp_path):
    check(exports, "mnist-cnn", "qdq", tmp_path, {"conv2d": 2, "dense": 2, "quantize": 1},
          ref_fmt="integer")


def test_resnet_style_integer_is_fused_and_exact(exports, tmp_path):
    """Residual adds fused into the convolutions' epilogues, ReLU + ReduceSum + Requantize as the
    global average pool kernel."""
    check(exports, "resnet20", "integer", tmp_path,
          {"avgpool": 1, "conv2d": 21, "dense": 1, "quantize": 1})


def test_binary_packed_is_fused_and_exact(exports, tmp_path):
    check(exports, "mnist-bnn", "packed", tmp_path,
          {"binary_conv2d": 1, "binary_dense": 2, "conv2d": 1, "quantize": 1})


@pytest.mark.parametrize(("arch", "fmt"), [("mnist-small", "integer"), ("mnist-small", "qdq"),
                                         ("odd-widths", "integer")])
def test_widths_off_the_lane_tile_are_fused_and_exact(exports, arch, fmt, tmp_path):
    """Layer widths that fill no lane tile (mnist-small's fc 100; 6, 10, 50, 30 channels and
    features): each layer reads its producer's padded storage, a dense after a dense too."""
    dense = 3 if arch == "odd-widths" else 2
    check(exports, arch, fmt, tmp_path, {"conv2d": 2, "dense": dense, "quantize": 1},
          ref_fmt="integer")


def test_unmatched_graphs_are_refused_with_the_reason(tmp_path, host):
    """The ResNet QDQ export keeps its residual adds in float: no fused network; the compile
    stage records why and takes the per-op path (checked on a graph that builds quickly)."""
    m = onnx.load(str(export("resnet20", "qdq", tmp_path)))
    with pytest.raises(UnsupportedError, match="fused network does not cover this graph: relu: only a ReLU of a residual sum"):
        from_onnx(prepare(m).graph, host)
    art = compile_stage(uint8_conv_model(tmp_path / "conv.onnx"), CompileConfig(target="x86"), tmp_path / "out")
    assert art.meta["compile_path"] == PER_OP_PATH and "float [N, C, H, W]" in art.meta["fused_refused"]


@pytest.fixture(scope="module")
def aarch64():
    import shutil

    from robustq_deploy.targets import get_target
    from robustq_deploy.targets.toolchain import missing_tools

    desc = get_target("aarch64")
    if missing_tools(desc) or shutil.which("aarch64-linux-gnu-objdump") is None:
        pytest.skip(f"aarch64 tools missing: {missing_tools(desc)}")
    return desc


def test_aarch64_build_is_fused_with_sdot_and_cnt(exports, aarch64, tmp_path):
    """The aarch64 target takes the fused path too: cross-linked, NEON dot product and cnt."""
    from robustq_deploy.kernels import disasm
    from robustq_deploy.kernels.features import features_of

    art = compile_stage(exports[("mnist-bnn", "packed")], CompileConfig(target="aarch64"), tmp_path)
    assert art.meta["compile_path"] == FUSED_PATH
    assert disasm.check(art.file, features_of(aarch64.tvm_target()), binary=True)["ok"]


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize(("arch", "fmt"), [("mnist-cnn", "integer"), ("mnist-bnn", "packed")])
def test_aarch64_build_is_exact_under_qemu(exports, aarch64, arch, fmt, tmp_path):
    import subprocess

    from robustq_deploy.targets.toolchain import ensure_toolchain

    tc = ensure_toolchain(aarch64)
    art = compile_stage(exports[(arch, fmt)], CompileConfig(target="aarch64"), tmp_path / "out")
    for n in (2, 20):
        x = np.random.default_rng(n).random((n, *MODELS[arch][0]), dtype=np.float32)
        np.save(tmp_path / "x.npy", x)
        run = subprocess.run(tc.command + [str(art.file), str(tmp_path), str(tmp_path / "x.npy")],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-1000:]
        np.testing.assert_array_equal(np.load(tmp_path / "out_0.npy"), reference(exports[(arch, fmt)], x))
