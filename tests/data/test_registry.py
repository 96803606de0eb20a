"""Tests for robustq_deploy.data.registry: names, lookup errors and registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustq_deploy.data import Dataset, dataset_names, load_dataset, register_dataset, registry
from robustq_deploy.errors import DataError


def test_builtin_datasets_are_registered() -> None:
    assert dataset_names() == ("cifar10", "digits", "fashion-mnist", "folder", "mnist", "npz")


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", "train")
    message = str(err.value)
    assert "'imagenet'" in message and "\n" not in message
    for name in dataset_names():
        assert name in message


def test_unknown_split_is_an_error() -> None:
    with pytest.raises(DataError, match="unknown split 'validation'.*train, test"):
        load_dataset("digits", "validation")


def test_registered_loader_receives_split_path_and_download_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A private copy so the test's loader does not leak into the real registry.
    monkeypatch.setattr(registry, "DATASETS", registry.DATASETS.copy())
    monkeypatch.setattr(registry, "_USES", dict(registry._USES))
    calls: list[tuple[str, Path | None, bool]] = []

    @register_dataset("toy")
    def load_toy(split: str, data_dir: Path | None, download: bool) -> Dataset:
        calls.append((split, data_dir, download))
        return Dataset(
            "toy", split, np.zeros((1, 1, 1, 1), np.uint8), np.zeros(1, np.int64), ("x",)
        )

    assert "toy" in dataset_names()
    assert load_dataset("toy", "test", data_dir="~/somewhere", download=False).split == "test"
    assert calls == [("test", Path.home() / "somewhere", False)]
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("toy")(load_toy)
