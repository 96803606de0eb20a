"""Tests for robustq_deploy.data.storage: folder lookup, atomic downloads, safe extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

from robustq_deploy.data import storage
from robustq_deploy.data.storage import (
    atomic_output,
    download_file,
    extract_tar_members,
    find_folder,
    search_folders,
    user_cache_dir,
)
from robustq_deploy.errors import DataError

from .helpers import files_under


def test_user_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "robustq" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "robustq" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "robustq" / "data"


def test_search_order_is_data_dir_then_env_then_cache(isolated: Path, tmp_path: Path) -> None:
    env = tmp_path / "env-data"
    given = tmp_path / "given"
    assert search_folders(given, ("a", "b")) == [
        given / "a",
        given / "b",
        given,
        env / "a",
        env / "b",
        env,
        isolated / "a",
        isolated / "b",
    ]
    # The same root given twice is searched once.
    assert search_folders(env, ("a",)) == [env / "a", env, isolated / "a"]


def test_find_folder_needs_every_file(tmp_path: Path) -> None:
    partial, complete = tmp_path / "partial", tmp_path / "complete"
    for folder, names in ((partial, ["x"]), (complete, ["x", "y"])):
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"1")
    assert find_folder([tmp_path / "missing", partial, complete], ["x", "y"]) == complete
    assert find_folder([partial], ["x", "y"]) is None


def test_atomic_output_leaves_nothing_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(RuntimeError), atomic_output(dest) as out:
        out.write(b"half")
        raise RuntimeError("interrupted")
    assert files_under(tmp_path) == []
    with atomic_output(dest) as out:
        out.write(b"whole")
    assert files_under(tmp_path) == [dest] and dest.read_bytes() == b"whole"


def test_check_md5_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    storage.check_md5(path, hashlib.md5(b"abc").hexdigest(), "Toy")
    with pytest.raises(DataError, match=f"{path}: md5 .* does not match the published 0+ for Toy"):
        storage.check_md5(path, "0" * 32, "Toy")


def test_download_keeps_only_verified_files(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    served = tmp_path / "served"
    served.mkdir()
    payload = bytes(range(256)) * 5000
    (served / "blob.bin").write_bytes(payload)
    url = serve(served) + "blob.bin"
    cache = tmp_path / "cache"

    download_file(url, cache / "blob.bin", hashlib.md5(payload).hexdigest())
    assert files_under(cache) == [cache / "blob.bin"]
    assert (cache / "blob.bin").read_bytes() == payload

    with pytest.raises(DataError, match="has md5 .* expected 0+; nothing was saved") as err:
        download_file(url, cache / "other.bin", "0" * 32)
    assert "\n" not in str(err.value)
    with pytest.raises(urllib.error.HTTPError):
        download_file(url + ".missing", cache / "missing.bin", "0" * 32)
    assert files_under(cache) == [cache / "blob.bin"]


def _tar(path: Path, regular: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in regular.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_extract_writes_only_requested_members(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "a.tar.gz",
        {
            "../evil.txt": b"evil",
            "/abs/evil.txt": b"evil",
            "top/keep.bin": b"keep",
            "top/other": b"o",
        },
    )
    out = tmp_path / "out"
    extract_tar_members(archive, {"top/keep.bin": out / "keep.bin"})
    assert files_under(tmp_path) == [archive, out / "keep.bin"]
    assert (out / "keep.bin").read_bytes() == b"keep"


def test_extract_rejects_links_and_missing_members(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", {"top/a": b"a"}, symlinks={"top/link": "/etc/passwd"})
    with pytest.raises(DataError, match="member top/link is not a regular file"):
        extract_tar_members(archive, {"top/link": tmp_path / "out" / "link"})
    with pytest.raises(DataError, match="archive has no member top/b"):
        extract_tar_members(archive, {"top/b": tmp_path / "out" / "b"})
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="bad.tar.gz: cannot extract"):
        extract_tar_members(tmp_path / "bad.tar.gz", {"top/a": tmp_path / "out" / "a"})
    assert files_under(tmp_path / "out") == []
