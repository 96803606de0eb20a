"""Exports of ordinary float models (tests/own_models.py) compile to integer code that reproduces
the numpy integer reference bit for bit: depthwise and grouped convolutions, dilation, folded
conv-BN, ReLU6 clamps, residual adds, concatenation, average and global average pooling. On
x86 (in-process), aarch64 (qemu) and the fpga-sim target, which keeps layers it cannot run
(grouped convolutions, dilation) on the host with the reason recorded."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from robustq_deploy.config import QuantConfig
from robustq_deploy.export import export_model
from robustq_deploy.quant.convert import quantize
from robustq_deploy.runtime import load
from tests.own_models import Mixed, MobileNetV2Style, ResNetStyle

from tests.helpers import assert_within_rounding

from .helpers import Compiled, assert_bit_equal, compile_artifact, require_qemu, run_reference

SHAPE = (1, 8, 8)
NETS = {"mobilenet": MobileNetV2Style, "resnet": ResNetStyle, "mixed": Mixed}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``(key, fmt) -> path`` of each net's export, and test images on the pixel grid."""
    root = tmp_path_factory.mktemp("own-models")
    gen = torch.Generator().manual_seed(0)
    paths = {}
    for key, net in NETS.items():
        torch.manual_seed(0)
        twin = quantize(net(), QuantConfig(8, 8), SHAPE).train()
        with torch.no_grad():
            for _ in range(4):
                twin(torch.rand(32, *SHAPE, generator=gen))
        twin.eval()
        for fmt in ("integer", "qdq"):
            p = root / key / fmt / f"model.{fmt}.onnx"
            p.parent.mkdir(parents=True)
            p.write_bytes(export_model(twin, fmt, 21).SerializeToString())
            paths[(key, fmt)] = p
    x = (torch.randint(0, 256, (48, *SHAPE), generator=gen).float() / 255).numpy()
    return paths, x


@pytest.mark.parametrize("key", ["mobilenet", "mixed"])  # the ResNet-style net: tests/test_own_model.py
def test_x86_bit_exact_with_the_reference(exports, key):
    paths, x = exports
    model = onnx.load(str(paths[(key, "integer")]))
    c = Compiled(model)
    (got,) = c(x)
    assert_bit_equal(got, run_reference(model, x))
    assert c.meta["float_compute"] == []


def test_qdq_with_depthwise_layers_runs_as_the_integer_form(exports):
    """The QDQ rewrite fuses grouped convolutions (and folds the ReLU6 Clips) like any other."""
    paths, x = exports
    c = Compiled(onnx.load(str(paths[("mobilenet", "qdq")])))
    qdq = c.meta["rewrites"]["qdq"]
    assert qdq["float_layers"] == [] and len(qdq["fused"]) == 17
    (got,) = c(x)
    # fixed-point requantization where the reference computes in float: within the rounding bound
    assert_within_rounding(got, paths[("mobilenet", "qdq")], x)


def test_fpga_sim_offloads_what_it_can_and_says_why_not(exports, tmp_path):
    paths, x = exports
    lib = compile_artifact(paths[("mobilenet", "integer")], "fpga-sim", tmp_path)
    assert_bit_equal(load(lib)(x), run_reference(onnx.load(str(paths[("mobilenet", "integer")])), x))
    from robustq_deploy.manifest import Manifest

    meta = Manifest.load(tmp_path).find(lib).meta["accel"]
    host = {h["name"]: h["reasons"] for h in meta["host_layers"]}
    assert host and all(any("grouped convolution" in r for r in reasons) for reasons in host.values())
    assert meta["cost"]["totals"]["layers_on_accelerator"] >= 10  # pointwise convs and the classifier


@pytest.mark.qemu
@pytest.mark.parametrize("key", ["mobilenet", "mixed"])
def test_aarch64_bit_exact_with_the_reference(exports, tmp_path, key):
    require_qemu()
    paths, x = exports
    lib = compile_artifact(paths[(key, "integer")], "aarch64", tmp_path)
    got = load(lib)(x[:16])
    assert_bit_equal(np.asarray(got), run_reference(onnx.load(str(paths[(key, "integer")])), x[:16]))
