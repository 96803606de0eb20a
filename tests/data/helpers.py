"""Helpers shared by the data tests (fixtures live in conftest.py)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path


def closed_port_url() -> str:
    """A loopback URL nothing listens on: a port just released by the OS."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def copy_files(source: Path, dest: Path, names: list[str]) -> Path:
    """Copy ``names`` from ``source`` into ``dest`` (created) as writable files; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        # copyfile, not copy: the shared files are read-only, and tests corrupt the copies.
        shutil.copyfile(source / name, dest / name)
    return dest


def files_under(folder: Path) -> list[Path]:
    """Every regular file below ``folder`` (empty if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file())
