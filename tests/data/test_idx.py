"""Tests for robustq_deploy.data.idx: IDX parsing on real and deliberately broken files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from robustq_deploy.data.idx import parse_idx, read_idx
from robustq_deploy.errors import DataError

LABELS = "t10k-labels-idx1-ubyte.gz"


def test_parse_small_array() -> None:
    raw = struct.pack(">BBBBII", 0, 0, 0x08, 2, 2, 3) + bytes(range(6))
    array = parse_idx(raw, Path("x"), ndim=2)
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, [[0, 1, 2], [3, 4, 5]])


def test_real_labels_file(shared_data_dir: Path) -> None:
    labels = read_idx(shared_data_dir / "mnist" / LABELS, ndim=1)
    assert labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_wrong_dimensionality_is_bad_magic(shared_data_dir: Path) -> None:
    path = shared_data_dir / "mnist" / LABELS
    with pytest.raises(DataError, match=f"{path}: bad IDX magic 0x00000801, expected 0x00000803"):
        read_idx(path, ndim=3)


def test_non_uint8_type_is_bad_magic() -> None:
    raw = struct.pack(">BBBBI", 0, 0, 0x0D, 1, 1) + b"\0\0\0\0"  # 0x0D = float32
    with pytest.raises(DataError, match="bad IDX magic 0x00000d01"):
        parse_idx(raw, Path("x"), ndim=1)


def test_truncated_and_padded_payloads(shared_data_dir: Path) -> None:
    raw = gzip.decompress((shared_data_dir / "mnist" / LABELS).read_bytes())
    with pytest.raises(
        DataError, match=r"declares shape \(10000,\) \(10008 bytes\).*10007 bytes \(truncated\)"
    ):
        parse_idx(raw[:-1], Path("labels"), ndim=1)
    with pytest.raises(DataError, match="trailing bytes"):
        parse_idx(raw + b"\0", Path("labels"), ndim=1)
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(raw[:6], Path("labels"), ndim=1)


def test_truncated_or_foreign_gzip_names_the_file(shared_data_dir: Path, tmp_path: Path) -> None:
    data = (shared_data_dir / "mnist" / LABELS).read_bytes()
    truncated = tmp_path / LABELS
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{truncated}: not a readable gzip file") as err:
        read_idx(truncated, ndim=1)
    assert "\n" not in str(err.value)
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"IDX but not gzip")
    with pytest.raises(DataError, match=f"{plain}: not a readable gzip file"):
        read_idx(plain, ndim=1)
