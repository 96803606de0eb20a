"""Slow: an int8 PGD-AT MNIST model verified on onnxruntime and TVM x86 with the full white-box
ensemble and Square; every validity check must pass. ``ROBUSTQ_VERIFY_MNIST_CACHE=DIR`` keeps
the trained, exported and compiled artifacts between runs."""
import json
import os
from pathlib import Path

import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig, ExportConfig, RunConfig, from_dict
from robustq_deploy.export import export_stage
from robustq_deploy.train import train_stage
from robustq_deploy.verify import verify_stage

from .conftest import verify_config


@pytest.fixture(scope="module")
def mnist_int8(tmp_path_factory) -> Path:
    cache = os.environ.get("ROBUSTQ_VERIFY_MNIST_CACHE")
    out = Path(cache) if cache else tmp_path_factory.mktemp("mnist-int8")
    if not (out / "model.x86.so").exists():
        cfg = from_dict(RunConfig, {
            "name": "verify-mnist-int8", "data": {"dataset": "mnist", "train_limit": 6000},
            "model": {"arch": "mnist-cnn"},
            "train": {"method": "pgd-at", "epochs": 2, "batch_size": 64, "lr": 2e-3, "seed": 0, "threads": 1,
                      "eps_warmup_epochs": 1, "params": {"clean_weight": 0.2}, "attack": {"eps": 0.2, "steps": 4}},
        })
        ckpt = train_stage(cfg, out, progress=False)
        onnx_art = export_stage(ckpt.file, ExportConfig(format="qdq"), out)
        compile_stage(onnx_art.file, CompileConfig(target="x86"), out)
    return out


@pytest.mark.slow
def test_int8_mnist_verified_on_onnxruntime_and_tvm(mnist_int8, tmp_path):
    cfg = verify_config(attacks=["pgd", "apgd-ce", "apgd-dlr", "transfer", "square"], eps=0.1, steps=20, limit=200,
                        batch_size=100, eps_sweep=[0.2], attack_params={"square": {"queries": 500}})
    verify_stage(mnist_int8 / "model.x86.so", cfg, tmp_path, progress=False)
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["deployed"] == ["onnxruntime", "tvm-x86"]
    for eng in r["deployed"]:
        m = r["models"][eng]
        assert m["clean_acc"] > 0.9 and 0 < m["robust_acc"]["worst_case"] < m["clean_acc"]
        assert set(m["robust_acc"]) == {"pgd", "apgd-ce", "apgd-dlr", "transfer", "square", "worst_case"}
    assert r["flags"] == [], r["flags"]
