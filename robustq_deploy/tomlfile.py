"""The one reader of the project's TOML files: run configs, target and accelerator descriptions.

:func:`read_toml` returns the parsed tables of a file (a path, or a file shipped inside the
package as an ``importlib.resources`` traversable); an unreadable file, bytes that are not UTF-8
and invalid TOML are one-line :class:`~robustq_deploy.errors.ConfigError` s naming the file. A
``.json`` file is read as JSON (run configs stored by a manifest). :func:`parse_value` reads one
value in TOML syntax (``--set key=value`` on the command line).
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError


def read_toml(source: Any, what: str = "file") -> dict[str, Any]:
    """The tables of the TOML (or ``.json``) file ``source``; ``what`` names it in errors
    (``"config"``, ``"target file"``, ...)."""
    name = str(source)
    fmt = "JSON" if name.endswith(".json") else "TOML"
    try:
        data = source.read_bytes() if hasattr(source, "read_bytes") else Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {name}: {exc.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not valid {fmt}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text) if fmt == "JSON" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{name}: not valid {fmt}: {exc}") from None


def parse_value(text: str) -> Any:
    """``text`` as a TOML value (``3``, ``"x"``, ``[1, 2]``, ``true``), or the text itself when it
    is not one (a bare word)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


__all__ = ["parse_value", "read_toml"]
