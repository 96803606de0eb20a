"""Fixtures of the accelerator tests: the project's three MNIST model kinds, trained briefly on
256 real MNIST images (the shared zoo's ``mnist-*-tiny``, :mod:`tests.zoo`; same architectures and
shapes as the full models, so cost figures are the full models'), each exported in its deployed
integer form into its own artifact folder, and compiled for fpga-sim (small preset) once per
session.

* ``int8``: mnist-cnn w8/a8, ``integer`` form (ConvInteger / MatMulInteger + fixed-point chains);
* ``ternary``: mnist-cnn ternary weights / a8, ``packed`` form (ai.robustq TernaryConv2d/Gemm);
* ``bnn``: mnist-bnn, binary weights and activations (8-bit first layer), ``packed`` form.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig, ExportConfig
from robustq_deploy.data import load_dataset
from robustq_deploy.export import export_stage

from tests.helpers import one_torch_thread  # noqa: F401  (autouse for this folder)

FORMATS = {"int8": "integer", "ternary": "packed", "bnn": "packed"}  # each kind's deployed form


@pytest.fixture(scope="session")
def tiny_onnx(zoo, tmp_path_factory) -> dict[str, Path]:
    """Model kind -> exported ONNX file (its folder holds checkpoint and manifest)."""
    root = tmp_path_factory.mktemp("accel-models")
    return {key: export_stage(zoo.copy(f"mnist-{key}-tiny", root / key), ExportConfig(format=fmt, opset=21),
                              root / key).file
            for key, fmt in FORMATS.items()}


@pytest.fixture(scope="session")
def fpga_libs(tiny_onnx) -> dict[str, Path]:
    """Model kind -> host library of its fpga-sim compile (default preset), next to its ONNX."""
    return {key: compile_stage(path, CompileConfig(target="fpga-sim"), path.parent).file
            for key, path in tiny_onnx.items()}


@pytest.fixture(scope="session")
def mnist_x() -> np.ndarray:
    return load_dataset("mnist", "test").as_float()[:32].astype(np.float32)
