"""The ops of ordinary float models that the project's own architectures do not use compile to
integer code reproducing the numpy integer reference bit for bit: dilation, 'same' padding,
grouped convolutions, hardtanh / clamp / ReLU6 clamps, concatenation, average pooling windows
(tests/own_models.py: Mixed). On x86 (in-process), aarch64 (qemu) and fpga-sim, which keeps the
layers it cannot run on the host with the reason recorded. The MobileNetV2-style and ResNet-style
networks go through every target in tests/test_own_model.py."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from robustq_deploy.config import QuantConfig
from robustq_deploy.export import export_model
from robustq_deploy.manifest import Manifest
from robustq_deploy.quant.convert import quantize
from robustq_deploy.runtime import load
from tests.helpers import assert_within_rounding
from tests.own_models import Mixed

from .helpers import Compiled, assert_bit_equal, compile_artifact, require_qemu, run_reference

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``fmt -> path`` of the Mixed net's exports, and test images on the pixel grid."""
    root = tmp_path_factory.mktemp("own-models")
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    twin = quantize(Mixed(), QuantConfig(8, 8), SHAPE).train()
    with torch.no_grad():
        for _ in range(4):
            twin(torch.rand(32, *SHAPE, generator=gen))
    twin.eval()
    paths = {}
    for fmt in ("integer", "qdq"):
        paths[fmt] = root / fmt / f"model.{fmt}.onnx"
        paths[fmt].parent.mkdir()
        paths[fmt].write_bytes(export_model(twin, fmt, 21).SerializeToString())
    x = (torch.randint(0, 256, (48, *SHAPE), generator=gen).float() / 255).numpy()
    return paths, x


def test_x86_bit_exact_with_the_reference(exports):
    paths, x = exports
    model = onnx.load(str(paths["integer"]))
    c = Compiled(model)
    (got,) = c(x)
    assert_bit_equal(got, run_reference(model, x))
    assert c.meta["float_compute"] == []


def test_qdq_within_the_rounding_bound(exports):
    """Dilated, 'same'-padded and grouped layers fuse like any other; concatenation and average
    pooling stay float in the QDQ module, within the rounding bound of the reference."""
    paths, x = exports
    c = Compiled(onnx.load(str(paths["qdq"])))
    qdq = c.meta["rewrites"]["qdq"]
    assert qdq["float_layers"] == [] and len(qdq["fused"]) == 4
    (got,) = c(x)
    assert_within_rounding(got, paths["qdq"], x)


def test_fpga_sim_keeps_what_it_cannot_run_on_the_host(exports, tmp_path):
    paths, x = exports
    lib = compile_artifact(paths["integer"], "fpga-sim", tmp_path)
    assert_bit_equal(load(lib)(x), run_reference(onnx.load(str(paths["integer"])), x))
    meta = Manifest.load(tmp_path).find(lib).meta["accel"]
    host = {h["name"]: h["reasons"] for h in meta["host_layers"]}
    assert host == {"dilated": ["dilation [2, 2]"], "grouped": ["grouped convolution (groups=4)"],
                    "pool": ["grouped convolution (groups=16)"], "avgpool": ["grouped convolution (groups=16)"]}
    assert meta["cost"]["totals"]["layers_on_accelerator"] == 2  # the 'same' conv and the classifier


@pytest.mark.qemu
def test_aarch64_bit_exact_with_the_reference(exports, tmp_path):
    require_qemu()
    paths, x = exports
    lib = compile_artifact(paths["integer"], "aarch64", tmp_path)
    got = load(lib)(x[:16])
    assert_bit_equal(np.asarray(got), run_reference(onnx.load(str(paths["integer"])), x[:16]))
