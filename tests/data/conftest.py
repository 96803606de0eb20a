"""Fixtures for the data tests: isolated data/cache folders and a loopback HTTP file server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .helpers import closed_port_url

URL_ENVS = ("ROBUSTQ_MNIST_URL", "ROBUSTQ_FASHION_MNIST_URL", "ROBUSTQ_CIFAR10_URL")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output free of per-request access logs


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty $ROBUSTQ_DATA_DIR and $XDG_CACHE_HOME; returns the (not yet created) cache folder.

    Download URLs point at a closed loopback port so no test can reach the real internet;
    tests that download set their own server URL.
    """
    monkeypatch.setenv("ROBUSTQ_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name in URL_ENVS:
        monkeypatch.setenv(name, closed_port_url())
    return tmp_path / "xdg" / "robustq" / "data"


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], str]]:
    """Start a loopback HTTP server for a folder; returns its base URL (ending in '/')."""
    # A proxy configured in the environment must not intercept loopback requests.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    servers: list[ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        server = ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory))
        )
        # A short poll interval makes shutdown() at teardown return quickly (default 0.5 s).
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
