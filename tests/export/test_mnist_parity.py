"""Done-when numbers of the integer export on MNIST (slow: trains four models for one epoch).

For int8, int4, ternary and binary models trained by the project: onnx.checker full check,
onnxruntime == numpy reference bit for bit (logits and int32 accumulators) on 1000 test images,
argmax agreement with the twin >= 99.5% on the full test set, integer-only graphs, packed binary
weights <= 1/28 of float. Set $ROBUSTQ_PARITY_CACHE to a folder of checkpoints made by
``bench/export_parity.py --cache`` to reuse them instead of training.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from robustq_deploy.config import DataConfig, ExportConfig, ModelConfig, RunConfig, TrainConfig
from robustq_deploy.data import load_dataset
from robustq_deploy.export import export_stage
from robustq_deploy.export.parity import measure_parity
from robustq_deploy.models.examples import EXAMPLE_MODELS
from robustq_deploy.train import load_checkpoint, train_stage

pytestmark = pytest.mark.slow

MODELS = EXAMPLE_MODELS


@pytest.fixture(scope="session")
def mnist_checkpoints(tmp_path_factory) -> dict[str, Path]:
    cache = os.environ.get("ROBUSTQ_PARITY_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("mnist-ckpt")
    out = {}
    for key, (arch, quant) in MODELS.items():
        ckpt = root / key / "model.safetensors"
        if not ckpt.exists():
            cfg = RunConfig(name=f"export-parity-{key}", data=DataConfig(dataset="mnist"), model=ModelConfig(arch=arch),
                            quant=quant, train=TrainConfig(method="qat", epochs=1, batch_size=128, lr=2e-3, seed=0))
            train_stage(cfg, root / key, progress=False)
        out[key] = ckpt
    return out


@pytest.fixture(scope="session")
def mnist_test():
    ds = load_dataset("mnist", "test")
    return ds.as_float(), ds.labels.astype("int64")


@pytest.mark.parametrize("fmt", ["integer", "qoperator", "packed"])
@pytest.mark.parametrize("key", list(MODELS))
def test_mnist_parity(mnist_checkpoints, mnist_test, tmp_path, key, fmt):
    twin, _, _ = load_checkpoint(mnist_checkpoints[key])
    art = export_stage(mnist_checkpoints[key], ExportConfig(format=fmt, opset=21), tmp_path)
    x, y = mnist_test
    res = measure_parity(twin, onnx.load(art.file), x, y, n_reference=1000)
    assert res["checker"] is True
    assert res["logits_bit_equal"] and res["accumulators_bit_equal"] and res["reference_images"] == 1000
    assert res["argmax_agreement"] >= 0.995
    assert res["integer_only"]
    assert res["deployed_accuracy"] >= 0.9
    if key == "bnn" and fmt == "packed":
        b = art.meta["size"]["by_kind"]["binary"]
        assert b["weight_bytes"] * 28 <= b["float_weight_bytes"]
