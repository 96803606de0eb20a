"""Fixtures of the accelerator tests: the project's three MNIST model kinds, trained briefly on
256 real MNIST images (same architectures and shapes as the full models, so cost figures are the
full models'), each exported in its deployed integer form into its own artifact folder, and
compiled for fpga-sim (small preset) once per session.

* ``int8``: mnist-cnn w8/a8, ``integer`` form (ConvInteger / MatMulInteger + fixed-point chains);
* ``ternary``: mnist-cnn ternary weights / a8, ``packed`` form (ai.robustq TernaryConv2d/Gemm);
* ``bnn``: mnist-bnn, binary weights and activations (8-bit first layer), ``packed`` form.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import (CompileConfig, DataConfig, ExportConfig, LayerQuantConfig, ModelConfig, QuantConfig,
                                   RunConfig, TrainConfig)
from robustq_deploy.data import load_dataset
from robustq_deploy.export import export_stage
from robustq_deploy.train import train_stage

from tests.helpers import one_torch_thread  # noqa: F401  (autouse for this folder)

MODELS = {
    "int8": ("mnist-cnn", QuantConfig(weight_bits=8, act_bits=8), "integer"),
    "ternary": ("mnist-cnn", QuantConfig(weight_bits="ternary", act_bits=8), "packed"),
    "bnn": ("mnist-bnn", QuantConfig(weight_bits="binary", act_bits="binary",
                                     layers={"conv1": LayerQuantConfig(weight_bits=8)}), "packed"),
}


def export_tiny(key: str, out: Path) -> Path:
    arch, quant, fmt = MODELS[key]
    cfg = RunConfig(name=f"accel-test-{key}", data=DataConfig(dataset="mnist", train_limit=256, test_limit=64),
                    model=ModelConfig(arch=arch), quant=quant,
                    train=TrainConfig(method="qat", epochs=1, batch_size=64, lr=3e-3, seed=0, threads=1))
    ckpt = train_stage(cfg, out, progress=False)
    return export_stage(ckpt.file, ExportConfig(format=fmt, opset=21), out).file


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> dict[str, Path]:
    """Model kind -> exported ONNX file (its folder holds checkpoint and manifest)."""
    root = tmp_path_factory.mktemp("accel-models")
    return {key: export_tiny(key, root / key) for key in MODELS}


@pytest.fixture(scope="session")
def fpga_libs(tiny_onnx) -> dict[str, Path]:
    """Model kind -> host library of its fpga-sim compile (default preset), next to its ONNX."""
    return {key: compile_stage(path, CompileConfig(target="fpga-sim"), path.parent).file
            for key, path in tiny_onnx.items()}


@pytest.fixture(scope="session")
def mnist_x() -> np.ndarray:
    return load_dataset("mnist", "test").as_float()[:32].astype(np.float32)
