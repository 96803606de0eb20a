"""IDX files (gzip-compressed, big-endian headers) and the loader shared by MNIST-style datasets.

MNIST and Fashion-MNIST ship the same four files in the same format and differ only in
checksums, URLs and class names, which an :class:`IdxDatasetSpec` captures.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from robustq_deploy.data.dataset import Dataset
from robustq_deploy.data.storage import (
    DOWNLOAD_ERRORS,
    check_md5,
    download_file,
    file_stamps,
    find_folder,
    missing_files_error,
    one_line,
    search_folders,
    user_cache_dir,
)
from robustq_deploy.errors import DataError

_UBYTE = 0x08  # IDX type code for unsigned bytes, the only type these datasets use


def parse_idx(raw: bytes, source: Path, ndim: int) -> np.ndarray:
    """Array from decompressed IDX bytes that must hold a uint8 array of ``ndim`` dimensions.

    The magic number, the declared dimensions and the exact payload length are checked;
    ``source`` only names the file in errors. The result is a zero-copy view of ``raw``.
    """
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: truncated IDX header ({len(raw)} bytes, need {header})")
    if raw[:2] != b"\0\0" or raw[2] != _UBYTE or raw[3] != ndim:
        raise DataError(
            f"{source}: bad IDX magic 0x{raw[:4].hex()}, expected 0x0000{_UBYTE:02x}{ndim:02x} "
            f"(uint8, {ndim}-D)"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "trailing bytes"
        raise DataError(
            f"{source}: IDX header declares shape {dims} ({expected} bytes) but the file has "
            f"{len(raw)} bytes ({problem})"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse a gzip-compressed IDX file; unreadable gzip data is a DataError naming ``path``."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            one_line(f"{path}: not a readable gzip file (truncated or corrupt): {exc}")
        ) from exc
    return parse_idx(raw, path, ndim)


@dataclass(frozen=True)
class IdxFile:
    """One distribution file and its published MD5 (of the .gz as distributed)."""

    name: str
    md5: str


@dataclass(frozen=True)
class IdxDatasetSpec:
    """Everything that distinguishes one MNIST-style dataset from another."""

    name: str  # registry name and folder name under a data root
    title: str  # human-readable name for messages
    classes: tuple[str, ...]
    url_env: str  # environment variable overriding default_url (mirrors, loopback tests)
    default_url: str  # base URL the file names are appended to
    train: tuple[IdxFile, IdxFile]  # (images, labels)
    test: tuple[IdxFile, IdxFile]
    image_hw: tuple[int, int] = (28, 28)

    def files(self, split: str) -> tuple[IdxFile, IdxFile]:
        """(images, labels) files of ``split``."""
        return self.train if split == "train" else self.test


def load_idx_dataset(
    spec: IdxDatasetSpec, split: str, data_dir: Path | None, download: bool
) -> Dataset:
    """Find (or download into the user cache), verify and parse one split of ``spec``."""
    names = [f.name for f in spec.files(split)]
    folders = search_folders(data_dir, (spec.name,))
    folder = find_folder(folders, names)
    if folder is None:
        if not download:
            raise missing_files_error(spec.title, split, names, folders, "download disabled")
        folder = _download(spec, split, folders)
    return _load_verified(spec, split, folder, file_stamps(folder, names))


def _download(spec: IdxDatasetSpec, split: str, folders: list[Path]) -> Path:
    target = user_cache_dir() / spec.name
    base_url = os.environ.get(spec.url_env) or spec.default_url
    for file in spec.files(split):
        if (target / file.name).is_file():
            continue
        url = f"{base_url.rstrip('/')}/{file.name}"
        try:
            download_file(url, target / file.name, file.md5)
        except DOWNLOAD_ERRORS as exc:
            names = [f.name for f in spec.files(split)]
            raise missing_files_error(
                spec.title, split, names, folders, f"download from {url} failed: {exc}"
            ) from exc
    return target


# Parsing 60k images takes a noticeable fraction of a second and callers load the same split
# many times (train, attack, verify). ``stamps`` is unused in the body but part of the key, so
# a file replaced on disk is verified and parsed again.
@lru_cache(maxsize=8)
def _load_verified(
    spec: IdxDatasetSpec, split: str, folder: Path, stamps: tuple[tuple[int, int], ...]
) -> Dataset:
    image_file, label_file = spec.files(split)
    for file in (image_file, label_file):
        check_md5(folder / file.name, file.md5, spec.title)
    images = read_idx(folder / image_file.name, 3)
    labels = read_idx(folder / label_file.name, 1)
    if images.shape[1:] != spec.image_hw:
        raise DataError(
            f"{folder / image_file.name}: images are {images.shape[1:]}, expected {spec.image_hw}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{folder}: {image_file.name} has {images.shape[0]} images but "
            f"{label_file.name} has {labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= len(spec.classes):
        raise DataError(
            f"{folder / label_file.name}: label {labels.max()} is outside "
            f"0..{len(spec.classes) - 1}"
        )
    return Dataset(spec.name, split, images[:, None], labels.astype(np.int64), spec.classes)
