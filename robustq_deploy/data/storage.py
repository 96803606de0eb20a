"""Where dataset files live on disk and how they get there.

Shared by the file-based loaders: the folder search order (explicit ``data_dir``, then
``$ROBUSTQ_DATA_DIR``, then the per-user cache), MD5 checks, atomic downloads and safe
extraction of archive members, plus the one-line ``DataError`` messages for missing files.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from robustq_deploy.errors import DataError

DATA_DIR_ENV = "ROBUSTQ_DATA_DIR"
_CHUNK = 1 << 20
_TIMEOUT_S = 60
# How a download can fail (network, HTTP protocol, malformed URL in an override variable);
# anything else is a bug and should surface as such.
DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, ValueError)


def one_line(text: object) -> str:
    """``text`` with all whitespace runs collapsed, so embedded OS messages keep errors one line."""
    return " ".join(str(text).split())


def user_cache_dir() -> Path:
    """Per-user download cache: ``$XDG_CACHE_HOME/robustq/data`` or ``~/.cache/robustq/data``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "robustq" / "data"


def search_folders(data_dir: Path | None, subfolders: Sequence[str]) -> list[Path]:
    """Folders that may hold a dataset's files, in lookup order, without duplicates.

    User-given roots (``data_dir``, ``$ROBUSTQ_DATA_DIR``) are tried as ``<root>/<subfolder>``
    and as ``<root>`` itself, since users often point them at the dataset folder directly; the
    cache, whose layout this package controls, only as ``<cache>/<subfolder>``.
    """
    folders: list[Path] = []
    env_dir = os.environ.get(DATA_DIR_ENV, "")
    for root in (data_dir, Path(env_dir).expanduser() if env_dir else None):
        if root is not None:
            folders += [root / sub for sub in subfolders] + [root]
    folders += [user_cache_dir() / sub for sub in subfolders]
    return list(dict.fromkeys(folders))


def find_folder(folders: Iterable[Path], names: Sequence[str]) -> Path | None:
    """First folder holding every file in ``names``, or None."""
    for folder in folders:
        if all((folder / name).is_file() for name in names):
            return folder
    return None


def file_stamps(folder: Path, names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """(size, mtime_ns) per file: part of in-memory cache keys so a replaced file is reloaded."""
    stats = [(folder / name).stat() for name in names]
    return tuple((s.st_size, s.st_mtime_ns) for s in stats)


def missing_files_error(
    title: str, split: str, names: Sequence[str], folders: Sequence[Path], reason: str
) -> DataError:
    """The error for files found in none of ``folders``; names the files and where to put them."""
    return DataError(
        one_line(
            f"{title} {split} files not found: {', '.join(names)} ({reason}); "
            f"put them in one of: {', '.join(str(f) for f in folders)}"
        )
    )


def md5_file(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, title: str) -> None:
    """Raise DataError naming ``path`` unless its MD5 is the published ``expected`` one."""
    actual = md5_file(path)
    if actual != expected:
        raise DataError(
            f"{path}: md5 {actual} does not match the published {expected} for {title} "
            f"(corrupt, truncated or another dataset's file); replace it with the official "
            f"file or delete it to download again"
        )


@contextmanager
def atomic_output(dest: Path) -> Iterator[BinaryIO]:
    """Write to a temp file next to ``dest``, renamed onto ``dest`` only if the block succeeds.

    Readers (and concurrent processes) therefore see either no file or a complete one; on any
    error the temp file is removed, so nothing half-written is left behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_file(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` with a progress bar, keeping it only if its MD5 is ``md5``.

    Raises DataError on a checksum mismatch and one of ``DOWNLOAD_ERRORS`` when the transfer
    fails; in both cases ``dest`` is untouched and no partial file remains.
    """
    digest = hashlib.md5()
    with atomic_output(dest) as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
        # disable=None hides the bar when stderr is not a terminal (CI logs, pytest).
        with tqdm(
            total=response.length, unit="B", unit_scale=True, desc=dest.name, disable=None
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(
                f"download {url} has md5 {digest.hexdigest()}, expected {md5}; nothing was "
                f"saved; check the mirror or put the official file in {dest.parent}"
            )


def extract_tar_members(archive: Path, members: dict[str, Path]) -> None:
    """Extract the regular-file ``members`` (archive name -> destination) of a tar archive.

    Only the listed names are read and destinations come from the caller, never from the
    archive, so crafted names (absolute paths, ``..``, links) cannot write outside them.
    """
    try:
        with tarfile.open(archive) as tar:
            for name, dest in members.items():
                try:
                    info = tar.getmember(name)
                except KeyError:
                    raise DataError(f"{archive}: archive has no member {name}") from None
                source = tar.extractfile(info) if info.isreg() else None
                if source is None:
                    raise DataError(f"{archive}: member {name} is not a regular file")
                with source, atomic_output(dest) as out:
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(one_line(f"{archive}: cannot extract: {exc}")) from exc
