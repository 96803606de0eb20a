"""CIFAR-10 (Krizhevsky 2009), binary version: 50k train / 10k test colour images, 3x32x32.

Files are ``data_batch_1.bin``..``data_batch_5.bin`` and ``test_batch.bin``; each record is one
label byte followed by 3072 pixel bytes (R, G and B planes, each 32x32 row-major), which maps
directly onto the [N, C, H, W] layout.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from robustq_deploy.data.dataset import Dataset
from robustq_deploy.data.registry import register_dataset
from robustq_deploy.data.storage import (
    DOWNLOAD_ERRORS,
    download_file,
    extract_tar_members,
    file_stamps,
    find_folder,
    missing_files_error,
    search_folders,
    user_cache_dir,
)
from robustq_deploy.errors import DataError

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
ARCHIVE_FOLDER = "cifar-10-batches-bin"  # the folder inside the official tarball
SUBFOLDERS = ("cifar10", ARCHIVE_FOLDER)
TARBALL = "cifar-10-binary.tar.gz"
TARBALL_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
URL_ENV = "ROBUSTQ_CIFAR10_URL"  # base URL overriding DEFAULT_URL (mirrors, loopback tests)
DEFAULT_URL = "https://www.cs.toronto.edu/~kriz/"
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32


def split_files(split: str) -> tuple[str, ...]:
    """Batch file names making up ``split``."""
    return TRAIN_FILES if split == "train" else TEST_FILES


def parse_batch(raw: bytes, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels uint8 [N]) from one batch file's bytes.

    ``source`` only names the file in errors.
    """
    if not raw or len(raw) % RECORD_BYTES:
        raise DataError(
            f"{source}: size {len(raw)} bytes is not a positive multiple of the "
            f"{RECORD_BYTES}-byte CIFAR-10 record (is it the binary version?)"
        )
    records = np.frombuffer(raw, np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    if labels.max() >= len(CLASSES):
        raise DataError(f"{source}: label {labels.max()} is outside 0..{len(CLASSES) - 1}")
    return records[:, 1:].reshape(-1, *IMAGE_SHAPE), labels


@register_dataset("cifar10")
def load_cifar10(split: str, data_dir: Path | None, download: bool) -> Dataset:
    """Load a CIFAR-10 split from ``cifar10/`` or ``cifar-10-batches-bin/`` (see load_dataset)."""
    names = split_files(split)
    folders = search_folders(data_dir, SUBFOLDERS)
    folder = find_folder(folders, names)
    if folder is None:
        if not download:
            raise missing_files_error("CIFAR-10", split, names, folders, "download disabled")
        folder = _download(split, folders)
    return _load(split, folder, file_stamps(folder, names))


def _download(split: str, folders: list[Path]) -> Path:
    cache = user_cache_dir()
    target = cache / ARCHIVE_FOLDER
    url = f"{(os.environ.get(URL_ENV) or DEFAULT_URL).rstrip('/')}/{TARBALL}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        # The 163 MB tarball is only an intermediate: keep it in a temp folder inside the cache
        # (not /tmp, which is often a small tmpfs) that is removed whether or not this succeeds.
        with tempfile.TemporaryDirectory(prefix=".cifar10-", dir=cache) as tmp:
            archive = Path(tmp) / TARBALL
            download_file(url, archive, TARBALL_MD5)
            # Both splits come from the same download, so extract them together.
            extract_tar_members(
                archive,
                {f"{ARCHIVE_FOLDER}/{name}": target / name for name in TRAIN_FILES + TEST_FILES},
            )
    except DOWNLOAD_ERRORS as exc:
        raise missing_files_error(
            "CIFAR-10", split, split_files(split), folders, f"download from {url} failed: {exc}"
        ) from exc
    return target


# Reading 50k records repeatedly is slow; ``stamps`` is unused in the body but part of the key,
# so a file replaced on disk is parsed again.
@lru_cache(maxsize=2)
def _load(split: str, folder: Path, stamps: tuple[tuple[int, int], ...]) -> Dataset:
    batches = [
        parse_batch((folder / name).read_bytes(), folder / name) for name in split_files(split)
    ]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches]).astype(np.int64)
    return Dataset("cifar10", split, images, labels, CLASSES)
