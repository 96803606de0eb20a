"""One deployed model shared by the verify tests: ``digits-cnn`` int8, PGD-AT for 4 epochs on the
8x8 digits (the shared zoo's ``digits-cnn-pgd-at``, :mod:`tests.zoo`), exported as QDQ ONNX and
compiled with TVM for this x86 CPU (all in one artifact folder with its manifest), plus a
verification report of it."""
from __future__ import annotations

from pathlib import Path

import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig, ExportConfig, VerifyConfig, from_dict
from robustq_deploy.export import export_stage
from robustq_deploy.verify import verify_stage

from tests.helpers import one_torch_thread  # noqa: F401  (autouse for this folder)

# small but complete: white-box, transfer and query attacks, a sweep, float model, amplification
REPORT_CFG = {"attacks": ["pgd", "apgd-ce", "transfer", "square"], "eps": 0.1, "eps_sweep": [0.05, 0.2],
              "steps": 5, "limit": 96, "batch_size": 48, "threads": 1,
              "attack_params": {"square": {"queries": 100}, "apgd-ce": {"steps": 10}}}


def verify_config(**changes) -> VerifyConfig:
    return from_dict(VerifyConfig, {**REPORT_CFG, **changes})


@pytest.fixture(scope="session")
def deployed(zoo, tmp_path_factory) -> Path:
    """The artifact folder: model.safetensors, model.qdq.onnx, model.x86.so, manifest.json."""
    out = tmp_path_factory.mktemp("deployed")
    onnx_art = export_stage(zoo.copy("digits-cnn-pgd-at", out), ExportConfig(format="qdq"), out)
    compile_stage(onnx_art.file, CompileConfig(target="x86"), out)
    return out


@pytest.fixture(scope="session")
def report_dir(deployed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    verify_stage(deployed / "model.x86.so", verify_config(), out, progress=False)
    return out
