"""Tests for robustq_deploy.data.cifar10 on small files written in the exact binary format.

The real dataset is not available offline, so each batch holds 20 records whose pixels encode
their record index, channel and position; the expected arrays are computed independently.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from robustq_deploy.data import cifar10, load_dataset
from robustq_deploy.errors import DataError

from .helpers import files_under

RECORDS = 20
ALL_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def label_of(batch: int, i: int) -> int:
    return (3 * i + batch) % 10


def pixel(batch: int, i: int, channel: int, y: int, x: int) -> int:
    """R varies along rows and columns; G and B are constant per record."""
    return [(x + 2 * y + i + batch) % 256, 100 + i, 200 - i - batch][channel]


def batch_bytes(batch: int) -> bytes:
    out = bytearray()
    for i in range(RECORDS):
        out.append(label_of(batch, i))
        for channel in range(3):  # R plane, G plane, B plane, each row-major
            out += bytes(pixel(batch, i, channel, y, x) for y in range(32) for x in range(32))
    return bytes(out)


def write_batches(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(ALL_FILES):
        (folder / name).write_bytes(batch_bytes(index))
    return folder


def test_parses_channels_positions_and_labels(tmp_path: Path) -> None:
    write_batches(tmp_path / "cifar10")
    test = load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert (test.name, len(test), test.input_shape) == ("cifar10", RECORDS, (3, 32, 32))
    assert test.images.dtype == np.uint8 and test.labels.dtype == np.int64
    assert test.classes[0] == "airplane" and test.classes[9] == "truck" and len(test.classes) == 10
    batch = 5  # test_batch.bin was written as the sixth file
    assert test.labels.tolist() == [label_of(batch, i) for i in range(RECORDS)]
    for i in (0, 7, RECORDS - 1):
        for y, x in ((0, 0), (0, 31), (5, 9), (31, 0), (31, 31)):
            assert test.images[i, :, y, x].tolist() == [pixel(batch, i, c, y, x) for c in range(3)]


def test_train_concatenates_batches_in_order(tmp_path: Path) -> None:
    write_batches(tmp_path / "cifar10")
    train = load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    assert len(train) == 5 * RECORDS
    expected = [label_of(batch, i) for batch in range(5) for i in range(RECORDS)]
    assert train.labels.tolist() == expected
    assert train.images[RECORDS * 3 + 4, 0, 1, 2] == pixel(3, 4, 0, 1, 2)


@pytest.mark.parametrize("layout", ["cifar-10-batches-bin", "."])
def test_tarball_folder_name_and_dataset_folder_are_accepted(tmp_path: Path, layout: str) -> None:
    write_batches(tmp_path / layout)
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path, download=False)) == RECORDS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "size 0 bytes is not a positive multiple of the 3073-byte"),
        (batch_bytes(0)[:-5], f"size {RECORDS * 3073 - 5} bytes is not a positive multiple"),
        (bytes([10]) + bytes(3072), "label 10 is outside 0..9"),
    ],
)
def test_malformed_batch_is_rejected_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    folder = write_batches(tmp_path / "cifar10")
    (folder / "test_batch.bin").write_bytes(content)
    with pytest.raises(DataError, match=f"{folder / 'test_batch.bin'}: {message}"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)


def test_missing_files_without_download_name_the_folders(isolated: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "train", data_dir=tmp_path / "given", download=False)
    message = str(err.value)
    assert "\n" not in message and "data_batch_1.bin" in message and "data_batch_5.bin" in message
    for sub in ("cifar10", "cifar-10-batches-bin"):
        assert str(tmp_path / "given" / sub) in message and str(isolated / sub) in message


def small_tarball(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A tarball laid out like the official one, holding the small batch files."""
    members = {f"cifar-10-batches-bin/{name}": batch_bytes(i) for i, name in enumerate(ALL_FILES)}
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {**members, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_wrong_tarball_from_server_is_rejected_and_not_kept(
    isolated: Path, tmp_path: Path, serve: Callable[[Path], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    small_tarball(served / "cifar-10-binary.tar.gz")
    monkeypatch.setenv("ROBUSTQ_CIFAR10_URL", serve(served))
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz has md5 .* expected c32a1d4a"):
        load_dataset("cifar10", "test")
    assert files_under(isolated) == []


def test_download_extracts_batches_into_the_cache(
    isolated: Path, tmp_path: Path, serve: Callable[[Path], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    archive = small_tarball(served / "cifar-10-binary.tar.gz", extra={"../escape.bin": b"x"})
    # The official archive cannot be served offline; accept this one's checksum instead.
    monkeypatch.setattr(cifar10, "TARBALL_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setenv("ROBUSTQ_CIFAR10_URL", serve(served))
    test = load_dataset("cifar10", "test")
    assert test.labels.tolist() == [label_of(5, i) for i in range(RECORDS)]
    folder = isolated / "cifar-10-batches-bin"
    assert files_under(isolated) == sorted(folder / name for name in ALL_FILES)
    assert not (tmp_path / "escape.bin").exists() and not (isolated.parent / "escape.bin").exists()
    # Both splits came from the one download.
    assert len(load_dataset("cifar10", "train", download=False)) == 5 * RECORDS
