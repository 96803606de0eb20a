"""Tests for robustq_deploy.data.mnist on the real files, plus lookup, checksum and download paths.

The download tests serve copies of the real files from a loopback HTTP server.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from robustq_deploy.data import load_dataset
from robustq_deploy.data.mnist import MNIST
from robustq_deploy.errors import DataError

from .helpers import copy_files, files_under

TEST_FILES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
# Published in the shared data README.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
DECOMPRESSED_MD5 = {
    ("train", "images"): "6bbc9ace898e44ae57da46a324031adb",
    ("train", "labels"): "a25bea736e30d166cdddb491f175f624",
    ("test", "images"): "2646ac647ad5339dbf082846283269ea",
    ("test", "labels"): "27ae3e4e09519cfbb04c329615203637",
}


def idx_md5(images: np.ndarray, labels: np.ndarray) -> tuple[str, str]:
    """MD5s of the IDX files that would hold these arrays: equal to the originals iff parsing
    kept every pixel and label in place."""
    n = len(labels)
    image_bytes = struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes()
    label_bytes = struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes()
    return hashlib.md5(image_bytes).hexdigest(), hashlib.md5(label_bytes).hexdigest()


@pytest.mark.parametrize(
    ("split", "n", "counts"), [("train", 60000, TRAIN_COUNTS), ("test", 10000, TEST_COUNTS)]
)
def test_real_split(split: str, n: int, counts: list[int]) -> None:
    ds = load_dataset("mnist", split)
    assert (ds.name, ds.split, len(ds)) == ("mnist", split, n)
    assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.classes == tuple("0123456789")
    assert np.bincount(ds.labels, minlength=10).tolist() == counts
    assert idx_md5(ds.images, ds.labels) == (
        DECOMPRESSED_MD5[split, "images"],
        DECOMPRESSED_MD5[split, "labels"],
    )


def test_first_test_image_is_a_seven() -> None:
    ds = load_dataset("mnist", "test")
    assert ds.labels[0] == 7
    image = ds.images[0, 0]
    assert image[0].max() == 0 and image.max() == 255  # blank top row, saturated strokes
    assert int(image.sum()) == 18454 and int((image > 0).sum()) == 116
    floats = ds.take(1).as_float()
    assert floats.dtype == np.float32 and floats.max() == 1.0 and floats.min() == 0.0


def test_data_dir_may_be_the_dataset_folder_itself(shared_data_dir: Path, tmp_path: Path) -> None:
    copy_files(shared_data_dir / "mnist", tmp_path, TEST_FILES)
    ds = load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert len(ds) == 10000 and ds.labels[:3].tolist() == [7, 2, 1]


def test_corrupt_byte_fails_md5_naming_the_file(shared_data_dir: Path, tmp_path: Path) -> None:
    folder = copy_files(shared_data_dir / "mnist", tmp_path / "mnist", TEST_FILES)
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    # data_dir is searched before $ROBUSTQ_DATA_DIR (the intact shared copy), so this must fail.
    with pytest.raises(
        DataError, match=f"{bad}: md5 .* does not match the published ec29112d"
    ) as err:
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert "\n" not in str(err.value)


def test_truncated_file_is_rejected_naming_the_file(shared_data_dir: Path, tmp_path: Path) -> None:
    folder = copy_files(shared_data_dir / "mnist", tmp_path / "mnist", TEST_FILES)
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100_000])
    with pytest.raises(DataError, match=f"{bad}: md5"):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False)


def test_replaced_file_is_verified_again(shared_data_dir: Path, tmp_path: Path) -> None:
    folder = copy_files(shared_data_dir / "mnist", tmp_path / "mnist", TEST_FILES)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path)) == 10000
    # The in-memory cache must not hide a file that changed on disk.
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: md5"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_missing_files_without_download_name_the_folders(isolated: Path, tmp_path: Path) -> None:
    given = tmp_path / "given"
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test", data_dir=given, download=False)
    message = str(err.value)
    assert "\n" not in message and "download disabled" in message
    for text in (*TEST_FILES, given / "mnist", tmp_path / "env-data" / "mnist", isolated / "mnist"):
        assert str(text) in message
    assert not isolated.exists()


def test_download_lands_verified_files_in_the_cache(
    isolated: Path,
    shared_data_dir: Path,
    tmp_path: Path,
    serve: Callable[[Path], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = copy_files(shared_data_dir / "mnist", tmp_path / "served", TEST_FILES)
    monkeypatch.setenv(
        "ROBUSTQ_MNIST_URL", serve(served).rstrip("/")
    )  # no trailing slash on purpose
    ds = load_dataset("mnist", "test")
    cached = isolated / "mnist"
    assert files_under(isolated) == [cached / name for name in sorted(TEST_FILES)]
    for file in MNIST.test:
        assert hashlib.md5((cached / file.name).read_bytes()).hexdigest() == file.md5
    reference = load_dataset("mnist", "test", data_dir=shared_data_dir)
    np.testing.assert_array_equal(ds.images, reference.images)
    np.testing.assert_array_equal(ds.labels, reference.labels)
    # Now found in the cache: no download needed.
    assert len(load_dataset("mnist", "test", download=False)) == 10000


def test_wrong_file_from_server_is_rejected_and_not_kept(
    isolated: Path,
    shared_data_dir: Path,
    tmp_path: Path,
    serve: Callable[[Path], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real IDX file, but Fashion-MNIST's: well-formed, yet not what MNIST publishes.
    served = copy_files(shared_data_dir / "fashion-mnist", tmp_path / "served", TEST_FILES)
    monkeypatch.setenv("ROBUSTQ_MNIST_URL", serve(served))
    with pytest.raises(
        DataError, match="t10k-images-idx3-ubyte.gz has md5 .* expected 9fb629c4"
    ) as err:
        load_dataset("mnist", "test")
    assert "\n" not in str(err.value)
    assert files_under(isolated) == []


def test_offline_download_names_missing_files_and_folders(isolated: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "test")  # `isolated` points the URL at a closed port
    message = str(err.value)
    assert "\n" not in message and "download from http://127.0.0.1:" in message
    for text in (*TEST_FILES, tmp_path / "env-data" / "mnist", isolated / "mnist"):
        assert str(text) in message
    assert files_under(isolated) == []
