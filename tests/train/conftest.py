"""Tiny digits runs shared by the training tests."""
from __future__ import annotations

from typing import Any

import pytest

from robustq_deploy.config import RunConfig, from_dict
from robustq_deploy.validation import validate


def digits_config(method: str, bits: Any = 8, epochs: int = 1, params: dict | None = None, train_limit: int = 256,
                  **train: Any) -> RunConfig:
    """A validated run config: digits-cnn on the first ``train_limit`` digits, 2-step attacks."""
    act = 32 if bits == 32 else 8
    return validate(from_dict(RunConfig, {
        "data": {"dataset": "digits", "train_limit": train_limit, "test_limit": 64},
        "model": {"arch": "digits-cnn"},
        "quant": {"weight_bits": bits, "act_bits": act},
        "train": {"method": method, "epochs": epochs, "batch_size": 64, "lr": 3e-3, "threads": 1,
                  "params": params or {}, "attack": {"eps": 0.1, "steps": 2}, **train},
    }))


@pytest.fixture
def config():
    return digits_config
