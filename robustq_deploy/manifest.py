"""Artifacts and their manifest.

Every stage writes its outputs into an artifact directory ``DIR`` and records each one in
``DIR/manifest.json``: kind (``checkpoint``, ``onnx``, ``compiled``, ``report``), path relative to
``DIR``, sha256, parents (the sha256 and path of the artifacts it was made from), the config that
made it, free-form metadata of the stage (input/output signature, sizes) and the tool versions.

Stages read inputs only through :func:`resolve_input`, which refuses a file whose bytes no longer
match its manifest entry, and compiled libraries are only ever loaded after that check.
Writes are atomic (temp file in the same folder, then ``os.replace``), so an interrupted stage
never leaves a half-written artifact or manifest behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .errors import ArtifactError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
KINDS = ("checkpoint", "onnx", "compiled", "report")


@lru_cache(maxsize=1)
def tool_versions() -> dict[str, str]:
    """Versions of the tools that shape artifact bytes."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("robustq-deploy", "torch", "onnx", "onnxruntime", "apache-tvm", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def dumps_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys) so equal content gives equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


@dataclass
class Artifact:
    """One manifest entry; ``path`` is relative to the manifest's directory."""

    name: str
    kind: str
    path: str
    sha256: str
    stage: str
    parents: list[dict[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    root: Path | None = field(default=None, compare=False, repr=False)

    @property
    def file(self) -> Path:
        assert self.root is not None
        return self.root / self.path

    def as_parent(self, child_root: Path) -> dict[str, str]:
        """Reference to this artifact from a manifest in ``child_root`` (relative path)."""
        rel = os.path.relpath(self.file.resolve(), Path(child_root).resolve())
        return {"name": self.name, "kind": self.kind, "sha256": self.sha256, "path": rel}

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("root")
        return d


class Manifest:
    """The artifact list of one directory."""

    def __init__(self, root: str | Path, artifacts: list[Artifact] | None = None):
        self.root = Path(root)
        self.artifacts: list[Artifact] = artifacts or []

    @classmethod
    def load(cls, root: str | Path) -> "Manifest":
        """Read ``root/manifest.json``; an absent file gives an empty manifest."""
        root = Path(root)
        path = root / MANIFEST_NAME
        if not path.exists():
            return cls(root)
        try:
            data = json.loads(path.read_text())
            if data.get("schema") != MANIFEST_SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}")
            arts = [Artifact(**a, root=root) for a in data["artifacts"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: corrupt manifest ({exc})") from None
        return cls(root, arts)

    def save(self) -> None:
        data = {"schema": MANIFEST_SCHEMA, "artifacts": [a.to_json() for a in self.artifacts]}
        atomic_write_text(self.root / MANIFEST_NAME, dumps_json(data))

    def find(self, path: str | Path) -> Artifact | None:
        rel = os.path.relpath(Path(path).resolve(), self.root.resolve())
        for art in self.artifacts:
            if art.path == rel:
                return art
        return None

    def by_sha(self, sha: str) -> Artifact | None:
        for art in reversed(self.artifacts):
            if art.sha256 == sha:
                return art
        return None

    def add(
        self,
        path: str | Path,
        kind: str,
        stage: str,
        parents: list[Artifact] = (),
        config: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Artifact:
        """Record ``path`` (already written inside ``root``), replacing an entry for the same path."""
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        p = Path(path)
        rel = os.path.relpath(p.resolve(), self.root.resolve())
        art = Artifact(
            name=p.name,
            kind=kind,
            path=rel,
            sha256=sha256_file(p),
            stage=stage,
            parents=[a.as_parent(self.root) for a in parents],
            config=config or {},
            meta=meta or {},
            tools=tool_versions(),
            root=self.root,
        )
        self.artifacts = [a for a in self.artifacts if a.path != rel] + [art]
        self.save()
        return art


def verify_artifact(art: Artifact) -> Artifact:
    """Raise if the artifact's file is missing or its bytes changed since it was recorded."""
    f = art.file
    if not f.exists():
        raise ArtifactError(f"{f}: listed in the manifest but missing")
    actual = sha256_file(f)
    if actual != art.sha256:
        raise ArtifactError(f"{f}: sha256 {actual[:12]}... does not match the manifest ({art.sha256[:12]}...); refusing a modified artifact")
    return art


def resolve_input(path: str | Path, kind: str | None = None, require_manifest: bool = True) -> Artifact:
    """The manifest entry of an input file, after checking its hash.

    With ``require_manifest=False`` a file that no manifest lists (an ONNX file from another
    tool, say) is accepted as an external artifact with its current hash.
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: no such file")
    art = Manifest.load(p.parent).find(p)
    if art is None:
        if require_manifest:
            raise ArtifactError(f"{p}: not listed in {p.parent / MANIFEST_NAME}; only artifacts recorded by robustq are accepted here")
        return Artifact(name=p.name, kind=kind or "onnx", path=p.name, sha256=sha256_file(p), stage="external", root=p.parent)
    if kind is not None and art.kind != kind:
        raise ArtifactError(f"{p}: is a {art.kind} artifact, expected {kind}")
    return verify_artifact(art)


def find_ancestor(art: Artifact, kind: str) -> Artifact | None:
    """Walk the parents (across manifests) to the nearest ancestor of ``kind``, hash-checked."""
    seen = set()
    frontier = [art]
    while frontier:
        cur = frontier.pop(0)
        for parent in cur.parents:
            if parent["sha256"] in seen:
                continue
            seen.add(parent["sha256"])
            ppath = cur.root / parent["path"]
            if not ppath.exists():
                continue
            found = Manifest.load(ppath.parent).by_sha(parent["sha256"])
            if found is None:
                continue
            if found.kind == kind:
                return verify_artifact(found)
            frontier.append(found)
    return None
