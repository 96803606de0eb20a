"""Tests for robustq_deploy.data.digits: scikit-learn's 8x8 digits with a fixed split."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_load_digits

from robustq_deploy.data import digits, load_dataset


@pytest.mark.parametrize(("split", "n"), [("train", 1437), ("test", 360)])
def test_shapes_and_types(split: str, n: int) -> None:
    ds = load_dataset("digits", split)
    assert (ds.name, ds.split, len(ds)) == ("digits", split, n)
    assert ds.images.shape == (n, 1, 8, 8) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert ds.input_shape == (1, 8, 8)
    assert ds.classes == tuple("0123456789")


def test_pixels_are_sklearn_counts_scaled_to_uint8() -> None:
    allowed = {round(v * 255 / 16) for v in range(17)}
    for split in ("train", "test"):
        images = load_dataset("digits", split).images
        assert set(np.unique(images).tolist()) <= allowed
        assert images.min() == 0 and images.max() == 255


def test_split_is_the_fixed_permutation_of_all_examples() -> None:
    bunch = sklearn_load_digits()
    order = np.random.RandomState(0).permutation(1797)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    np.testing.assert_array_equal(train.labels, bunch.target[order[:1437]])
    np.testing.assert_array_equal(test.labels, bunch.target[order[1437:]])
    expected_first = np.rint(bunch.data[order[0]] * 255 / 16).reshape(1, 8, 8)
    np.testing.assert_array_equal(train.images[0], expected_first)
    # Pinned so a change in the split (or in sklearn's data) cannot go unnoticed.
    assert train.labels[:8].tolist() == [2, 8, 2, 6, 6, 7, 1, 9]
    assert test.labels[:8].tolist() == [7, 9, 4, 7, 0, 2, 6, 1]


def test_loading_is_deterministic() -> None:
    first = load_dataset("digits", "test")
    digits._load.cache_clear()  # rebuild from sklearn rather than return the cached object
    again = load_dataset("digits", "test")
    assert again is not first
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)


def test_labels_are_roughly_balanced() -> None:
    train_counts = np.bincount(load_dataset("digits", "train").labels, minlength=10)
    test_counts = np.bincount(load_dataset("digits", "test").labels, minlength=10)
    # About 180 examples per class overall, split 80/20.
    assert train_counts.min() >= 130 and train_counts.max() <= 160
    assert test_counts.min() >= 20 and test_counts.max() <= 50
    assert (train_counts + test_counts).sum() == 1797
