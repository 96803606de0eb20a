"""Models shared by the attack tests.

* ``digits_float``: the float ``digits-cnn`` trained a few epochs in-process (seconds);
* ``float_mnist``: the float ``mnist-cnn`` adversarially trained once per session with the
  spine's ``pgd-at`` method set up as FGSM with a random start (one step of 0.375 at eps 0.3,
  Wong et al. 2020's MNIST setting) on 3000 images, so robust accuracy at eps 0.1-0.3 is not
  trivially 0 or 1.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustq_deploy.checkpoint import read_checkpoint
from robustq_deploy.config import QuantConfig
from robustq_deploy.data import load_dataset
from robustq_deploy.models import build_model

from tests.helpers import one_torch_thread  # noqa: F401  (autouse for this folder)

FLOAT = QuantConfig(weight_bits=32, act_bits=32)


def digits_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits", split)
    return torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels.astype("int64"))


def train_digits(quant: QuantConfig, arch: str = "digits-cnn", epochs: int = 6, seed: int = 0) -> torch.nn.Module:
    """A model trained with plain cross-entropy (Adam, batch 64); eval mode."""
    torch.manual_seed(seed)
    x, y = digits_tensors("train")
    model = build_model(arch, quant, 10, (1, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_float() -> torch.nn.Module:
    return train_digits(FLOAT)


@pytest.fixture(scope="session")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_tensors("test")


@pytest.fixture(scope="session")
def float_mnist(zoo) -> torch.nn.Module:
    """A float mnist-cnn, PGD-AT 2 epochs on 3000 MNIST images (the shared zoo's entry)."""
    model, _ = read_checkpoint(zoo.checkpoint("mnist-float-pgd-at"))
    return model.eval()


@pytest.fixture(scope="session")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("mnist", "test")
    return torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels.astype("int64"))
