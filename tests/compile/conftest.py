"""Shared fixtures of the compiler tests (trained once per session, seeded):

* ``ort_models``: a small float CNN trained briefly on real MNIST and quantized by onnxruntime
  (``quantize_static`` QOperator and QDQ, ``quantize_dynamic``), see :mod:`.ort_models`;
* ``project_models``: the project's int8, int4 and binary (``mnist-bnn``) models trained on the 8x8
  digits (the shared zoo's ``digits-*`` entries, :mod:`tests.zoo`) and exported as qdq / integer /
  qoperator / packed ONNX files;
* ``digits_x`` / ``mnist_x``: test inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from robustq_deploy.checkpoint import load_checkpoint
from robustq_deploy.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from robustq_deploy.data import load_dataset
from robustq_deploy.export import export_model
from robustq_deploy.models.examples import EXAMPLE_MODELS

from . import ort_models as ortq

PROJECT_QUANTS = {key: EXAMPLE_MODELS[key] for key in ("int8", "int4", "bnn")}
PROJECT_FORMATS = {"int8": ("qdq", "integer", "qoperator", "packed"), "int4": ("qdq", "integer", "packed"),
                   "bnn": ("integer", "packed")}


def project_config(key: str, dataset: str = "digits", epochs: int = 2, train_limit: int | None = None) -> RunConfig:
    arch, quant = PROJECT_QUANTS[key]
    return RunConfig(name=f"compile-test-{key}", data=DataConfig(dataset=dataset, train_limit=train_limit),
                     model=ModelConfig(arch=arch), quant=quant,
                     train=TrainConfig(method="qat", epochs=epochs, batch_size=64, lr=3e-3, seed=0, threads=1))


def export_all(root: Path, cfg: RunConfig, formats) -> dict[str, Path]:
    """Train ``cfg`` into ``root`` and write ``<format>.onnx`` files; returns their paths."""
    from robustq_deploy.train import train_stage

    art = train_stage(cfg, root, progress=False)
    model, _, _ = load_checkpoint(art.file)
    out = {}
    for fmt in formats:
        out[fmt] = root / f"{fmt}.onnx"
        onnx.save(export_model(model, fmt, 21), str(out[fmt]))
    return out


@pytest.fixture(scope="session")
def project_models(zoo, tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("compile-project")
    paths = {}
    for key, formats in PROJECT_FORMATS.items():
        model, _, _ = load_checkpoint(zoo.checkpoint(f"digits-{key}"))
        (root / key).mkdir()
        for fmt in formats:
            paths[(key, fmt)] = root / key / f"{fmt}.onnx"
            onnx.save(export_model(model, fmt, 21), str(paths[(key, fmt)]))
    return paths


@pytest.fixture(scope="session")
def digits_x() -> np.ndarray:
    return load_dataset("digits", "test").as_float().astype(np.float32)


@pytest.fixture(scope="session")
def ort_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compile-ort")
    return ortq.quantize_all(ortq.train_float_cnn(root, n_train=1000), root, n_calib=100)


@pytest.fixture(scope="session")
def mnist_x() -> np.ndarray:
    return ortq.mnist_float("test", 1000)[0]


def pytest_terminal_summary(terminalreporter):
    """List the conformance cases that were not run (refused element types) with the reason."""
    from .test_node_cases import REFUSALS

    if REFUSALS:
        terminalreporter.section("ONNX conformance cases not run (refused by the compiler)")
        for name, why in sorted(REFUSALS.items()):
            terminalreporter.write_line(why if why.startswith(name) else f"{name}: {why}")
