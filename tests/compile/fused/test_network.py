"""Whole networks: a quantized twin -> fused kernels -> one compiled module, bit-exact with the
composition of the kernels' numpy references at every batch size (and at the one batch size of a
static build), and in agreement with the PyTorch twin."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustq_deploy.compile.fused.from_twin import from_twin
from robustq_deploy.compile.fused.network import CompiledNetwork, compile_network, export_network
from robustq_deploy.config import LayerQuantConfig, QuantConfig
from robustq_deploy.errors import UnsupportedError
from robustq_deploy.models import build_model

from tests.kernels.conftest import calibrated_twin as twin, lowering, odd_widths_twin


def check_network(model, target, tmp_path, batches, batch=None):
    net = from_twin(model, target)
    lib = tmp_path / f"{model.arch}.so"
    export_network(compile_network(net, target, batch=batch), lib)
    run = CompiledNetwork(lib)
    for n in batches:
        x = np.random.default_rng(n).random((n, *model.input_shape), dtype=np.float32)
        got = run(x)
        np.testing.assert_array_equal(got, net.reference(x))
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        # integer and fake-quant twin agree except at near-ties of rounding
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9
    return net


def test_mnist_cnn(host, tmp_path):
    net = check_network(twin("mnist-cnn", (1, 28, 28)), host, tmp_path, (1, 5, 64))
    assert [n.kernel for n in net.nodes] == ["quantize", "conv2d", "conv2d", "dense", "dense"]


def test_mnist_bnn(host, tmp_path):
    quant = QuantConfig("binary", "binary", layers={"conv1": LayerQuantConfig(weight_bits=8)})
    net = check_network(twin("mnist-bnn", (1, 28, 28), quant), host, tmp_path, (1, 64))
    assert [n.kernel for n in net.nodes] == ["quantize", "conv2d", "binary_conv2d", "binary_dense", "binary_dense"]


def test_digits_cnn_stride2(host, tmp_path):
    check_network(twin("digits-cnn", (1, 8, 8)), host, tmp_path, (1, 7))


def test_widths_off_the_lane_tile(target, tmp_path):
    """Conv channels and dense features that fill no lane tile (6, 10, 50, 30) on every lowering:
    each layer reads its producer's padded storage (a dense after a dense too) exactly."""
    net = check_network(odd_widths_twin(), target, tmp_path, (1, 5))
    lanes = lowering(target).lanes
    assert [net.tensors[f"{t}.out0"].shape[-1] for t in ("conv1", "conv2", "fc1", "fc2")] == [
        -(-c // lanes) * lanes for c in (6, 10, 50, 30)]
    fc2, fc3 = (n for n in net.nodes if n.name in ("fc2", "fc3"))
    assert (fc2.spec.in_features, fc3.spec.in_features) == (net.tensors["fc1.out0"].shape[0],
                                                            net.tensors["fc2.out0"].shape[0])


@pytest.mark.slow
def test_resnet20(host, tmp_path):
    net = check_network(twin("resnet20", (3, 32, 32)), host, tmp_path, (1, 64))
    assert sum(n.kernel == "conv2d" for n in net.nodes) == 21


def test_resnet_style_blocks_small(host, tmp_path):
    """Residual adds (identity and projection shortcuts) and global average pooling, on 8x8."""
    net = check_network(twin("resnet20", (3, 8, 8)), host, tmp_path, (1, 3))
    assert any(len(n.inputs) == 2 for n in net.nodes) and any(n.kernel == "avgpool" for n in net.nodes)


def test_static_batch_build(host, tmp_path):
    """A build for one batch size runs that batch exactly and refuses any other."""
    model = twin("digits-cnn", (1, 8, 8))
    check_network(model, host, tmp_path, (4,), batch=4)
    run = CompiledNetwork(tmp_path / "digits-cnn.so")
    with pytest.raises(Exception, match="(?i)shape|mismatch|expect"):
        run(np.zeros((5, 1, 8, 8), np.float32))


def test_float_model_is_refused(host):
    with pytest.raises(UnsupportedError, match="float layer"):
        from_twin(build_model("mnist-cnn", QuantConfig(32, 32), 10, (1, 28, 28)).eval(), host)
