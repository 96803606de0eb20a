"""Sealed local state: resume files that only this user's robustq runs can have written.

A resume state (verify's finished units, say) sits in the artifact folder, where anyone who can
write the folder could edit it; a resumed run would then report those edited results as measured.
:func:`seal` computes an HMAC-SHA256 over the state's content with a per-user secret key
(``$ROBUSTQ_CACHE_DIR/state.key``, default ``~/.cache/robustq-deploy``, created once with mode
0600), and :func:`unseal_ok` checks it on load: a state without a valid seal is ignored, never
trusted.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from .errors import ArtifactError

KEY_NAME = "state.key"


def user_cache_dir() -> Path:
    """This user's robustq cache folder (``$ROBUSTQ_CACHE_DIR``, else the XDG cache)."""
    env = os.environ.get("ROBUSTQ_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robustq-deploy"


def _key() -> bytes:
    path = user_cache_dir() / KEY_NAME
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the state key ({exc.strerror})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run made it first
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot create the state key ({exc.strerror})") from None
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def seal(*parts: bytes) -> str:
    """The hex HMAC of ``parts`` (each length-prefixed, so no two splits collide)."""
    mac = hmac.new(_key(), digestmod=hashlib.sha256)
    for p in parts:
        mac.update(len(p).to_bytes(8, "little"))
        mac.update(p)
    return mac.hexdigest()


def unseal_ok(tag: object, *parts: bytes) -> bool:
    return isinstance(tag, str) and hmac.compare_digest(tag, seal(*parts))
