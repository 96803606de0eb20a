"""Tests for robustq_deploy.data.fashion_mnist on the real files, plus its download URL override."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from robustq_deploy.data import load_dataset

from .helpers import copy_files, files_under

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Published in the shared data README (MD5 of the decompressed IDX files).
IMAGES_MD5 = {
    "train": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "test": "8181f5470baa50b63fa0f6fddb340f0a",
}
LABELS_MD5 = {
    "train": "9018921c3c673c538a1fc5bad174d6f9",
    "test": "15d484375f8d13e6eb1aabb0c3f46965",
}


@pytest.mark.parametrize(("split", "per_class"), [("train", 6000), ("test", 1000)])
def test_real_split(split: str, per_class: int) -> None:
    ds = load_dataset("fashion-mnist", split)
    n = 10 * per_class
    assert (ds.name, ds.split, len(ds)) == ("fashion-mnist", split, n)
    assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.classes == CLASSES
    assert np.bincount(ds.labels, minlength=10).tolist() == [per_class] * 10
    # Rebuilding the IDX bytes from the arrays must reproduce the original files exactly.
    images_idx = struct.pack(">IIII", 0x803, n, 28, 28) + ds.images.tobytes()
    labels_idx = struct.pack(">II", 0x801, n) + ds.labels.astype(np.uint8).tobytes()
    assert hashlib.md5(images_idx).hexdigest() == IMAGES_MD5[split]
    assert hashlib.md5(labels_idx).hexdigest() == LABELS_MD5[split]


def test_first_examples() -> None:
    test = load_dataset("fashion-mnist", "test")
    assert [test.classes[i] for i in test.labels[:3]] == ["Ankle boot", "Pullover", "Trouser"]
    image = test.images[0, 0]
    assert int(image.sum()) == 33456 and int((image > 0).sum()) == 267
    assert load_dataset("fashion-mnist", "train").labels[:5].tolist() == [9, 0, 0, 3, 0]


def test_download_uses_its_own_url_variable(
    isolated: Path,
    shared_data_dir: Path,
    tmp_path: Path,
    serve: Callable[[Path], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    served = copy_files(shared_data_dir / "fashion-mnist", tmp_path / "served", names)
    monkeypatch.setenv("ROBUSTQ_FASHION_MNIST_URL", serve(served))
    ds = load_dataset("fashion-mnist", "test")
    assert files_under(isolated) == [isolated / "fashion-mnist" / name for name in names]
    assert len(ds) == 10000 and ds.labels[0] == 9
