"""Tests for robustq_deploy.data.dataset: the Dataset container."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robustq_deploy.data import Dataset
from robustq_deploy.errors import DataError

CLASSES = ("a", "b", "c")


def make(n: int = 5, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> Dataset:
    if images is None:
        images = np.arange(n * 2 * 3 * 4, dtype=np.int64).reshape(n, 2, 3, 4).astype(np.uint8)
    if labels is None:
        labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    return Dataset("toy", "train", images, labels, CLASSES)


def test_shape_accessors() -> None:
    ds = make(5)
    assert ds.input_shape == (2, 3, 4)
    assert len(ds) == 5


def test_take_returns_first_examples_in_order() -> None:
    ds = make(5)
    head = ds.take(3)
    assert len(head) == 3
    np.testing.assert_array_equal(head.images, ds.images[:3])
    assert head.labels.tolist() == [0, 1, 2]
    assert (head.name, head.split, head.classes) == (ds.name, ds.split, ds.classes)
    assert len(ds.take(0)) == 0
    assert len(ds.take(5)) == 5


@pytest.mark.parametrize("n", [-1, 6])
def test_take_out_of_range_is_an_error(n: int) -> None:
    with pytest.raises(DataError, match="has 5 examples"):
        make(5).take(n)


def test_as_float_scales_to_unit_interval() -> None:
    images = np.array([0, 1, 128, 255], dtype=np.uint8).reshape(1, 1, 2, 2)
    ds = make(1, images=images, labels=np.array([2]))
    floats = ds.as_float()
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats.ravel(), np.float32([0, 1, 128, 255]) / np.float32(255))
    assert floats.max() == 1.0
    floats[...] = 0  # a fresh array: editing it must not touch the dataset
    assert ds.images.max() == 255


def test_arrays_are_read_only_without_touching_the_callers_array() -> None:
    images = np.zeros((2, 1, 2, 2), np.uint8)
    ds = make(2, images=images)
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 1
    with pytest.raises(ValueError):
        ds.labels[0] = 1
    assert images.flags.writeable


def test_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": np.zeros((2, 1, 2, 2), np.float32)}, "images must be uint8"),
        ({"images": np.zeros((2, 4), np.uint8)}, "images must be uint8"),
        ({"labels": np.zeros(2, np.int32)}, "labels must be int64"),
        ({"labels": np.zeros(3, np.int64)}, "labels must be int64"),
        ({"labels": np.array([0, 3])}, "labels must lie in 0..2"),
    ],
)
def test_invalid_contents_are_rejected(kwargs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(DataError, match=message):
        make(2, **kwargs)


def test_invalid_split_and_classes_are_rejected() -> None:
    images, labels = np.zeros((1, 1, 1, 1), np.uint8), np.zeros(1, np.int64)
    with pytest.raises(DataError, match="split must be one of train, test"):
        Dataset("toy", "val", images, labels, CLASSES)
    with pytest.raises(DataError, match="classes must be a non-empty tuple"):
        Dataset("toy", "test", images, labels, ["a"])  # type: ignore[arg-type]
