"""Shared fixtures of the export tests: small models trained once per session on the 8x8 digits
(the shared zoo's entries, :mod:`tests.zoo`).

* ``int8``: ``mnist-cnn`` (conv - relu - maxpool x2, fc - relu - fc) trained 2 epochs of QAT;
* ``int4`` (w4/a4) and ``ternary`` (w ternary/a8): the same architecture carrying the int8
  model's weights, with observers recalibrated on training data (cheap; parity tests need real
  scales and weights, not accuracy);
* ``bnn``: ``mnist-bnn`` (binary weights and activations, 8-bit first layer, BatchNorm + sign)
  trained 3 epochs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustq_deploy.data import load_dataset
from robustq_deploy.models import build_model
from robustq_deploy.models.examples import EXAMPLE_MODELS
from robustq_deploy.checkpoint import load_checkpoint

QUANTS = EXAMPLE_MODELS


@pytest.fixture(scope="session")
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Test images (float32 [N,1,8,8] on the uint8 pixel grid) and labels."""
    ds = load_dataset("digits", "test")
    return ds.as_float().astype(np.float32), ds.labels.astype(np.int64)


@pytest.fixture(scope="session")
def checkpoints(zoo, tmp_path_factory) -> dict[str, Path]:
    """Checkpoint artifacts (with manifests) of the trained int8 and bnn models, in folders of
    the export tests' own."""
    root = tmp_path_factory.mktemp("export-ckpt")
    return {key: zoo.copy(f"digits-{key}", root / key) for key in ("int8", "bnn")}


@torch.no_grad()
def _recalibrated(key: str, state: dict) -> torch.nn.Module:
    arch, quant = QUANTS[key]
    model = build_model(arch, quant, 10, (1, 8, 8))
    model.load_state_dict(state, strict=False)
    train = load_dataset("digits", "train")
    x = torch.from_numpy(train.as_float())
    model.train()
    for i in range(0, 512, 64):  # observers: EMA of the batch maxima
        model(x[i:i + 64])
    return model.eval()


@pytest.fixture(scope="session")
def models(checkpoints) -> dict[str, torch.nn.Module]:
    int8, _, _ = load_checkpoint(checkpoints["int8"])
    bnn, _, _ = load_checkpoint(checkpoints["bnn"])
    state = {k: v for k, v in int8.state_dict().items() if not k.endswith("in_q.scale") and "observed" not in k}
    return {"int8": int8, "int4": _recalibrated("int4", state), "ternary": _recalibrated("ternary", state), "bnn": bnn}
