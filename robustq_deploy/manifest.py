"""Artifacts and their manifest.

Every stage writes its outputs into an artifact directory ``DIR`` and records each one in
``DIR/manifest.json``: kind (``checkpoint``, ``onnx``, ``compiled``, ``report``), path relative to
``DIR``, sha256, parents (the sha256 and path of the artifacts it was made from), the config that
made it, free-form metadata of the stage (input/output signature, sizes) and the tool versions.

Reading. Stages read inputs only through :func:`resolve_input`, which refuses a file whose bytes
no longer match its manifest entry. What is then used must be exactly the bytes that were hashed:
:func:`read_verified` returns them from one read, :func:`private_copy` copies a file while hashing
it into a private (0700) folder, and native libraries are loaded only from such a copy, so
replacing the file after the check changes nothing. The manifest itself is parsed strictly: an
entry whose path is absolute or leaves ``DIR`` is refused, as is any field of the wrong type.

Writing. A stage writes its files inside :func:`publishing` (``with publishing(DIR) as pub``):
every :func:`atomic_path` write under ``DIR`` is staged as a hidden temp file
(``.NAME.<pid>.<random>.tmp``) and :meth:`Publication.record` queues the manifest entries. When
the block succeeds, the publication takes the manifest lock (``fcntl.flock`` on
``DIR/.manifest.lock``), re-reads the manifest, hashes the staged files and writes the new
manifest to a temp file. Then it writes a journal (``.publish.<pid>.<random>.journal``) listing
every move, moves the staged files into place, the manifest last, and deletes the journal.
A failure before the journal exists (a full disk, a kill, an exception) leaves the previous files
and manifest as they were, and the temp files of a process that no longer runs are removed by the
next publication. A kill after it is rolled forward: the next reader or writer of ``DIR``
(:meth:`Manifest.load`) finds the dead process's journal and completes its moves, so the folder
always shows either the old set of files or the new one.
"""
from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .errors import ArtifactError

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
JOURNAL_SUFFIX = ".journal"
MANIFEST_SCHEMA = 1
KINDS = ("checkpoint", "onnx", "compiled", "report")
_TEMP = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


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


def io_error(exc: OSError, what: str | Path | None = None) -> ArtifactError:
    """An OSError as a one-line error naming the file and the cause."""
    name = exc.filename if exc.filename is not None else what
    cause = exc.strerror or type(exc).__name__
    return ArtifactError(f"{name}: {cause}" if name is not None else cause)


# --------------------------------------------------------------------------- writing


def temp_name(target: Path) -> Path:
    """A hidden temp path next to ``target``, tagged with this process id (see :func:`clean_stale_temps`)."""
    return target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove temp files and folders in ``folder`` left by processes that no longer run (kill -9)."""
    removed = []
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            m = _TEMP.match(p.name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def ensure_writable(folder: str | Path, create: bool = True) -> Path:
    """Prove, before any work, that files can be written in ``folder`` (a one-line error naming
    it and the cause otherwise). With ``create`` the folder is made; without, a folder that does
    not exist yet is probed through its nearest existing parent and not created."""
    d = Path(folder)
    probe_in = d
    if not create:
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
    try:
        if create:
            d.mkdir(parents=True, exist_ok=True)
        elif not probe_in.is_dir():
            raise FileExistsError if probe_in == d else NotADirectoryError
        probe = temp_name(probe_in / "probe")
        probe.mkdir()
        probe.rmdir()
    except FileExistsError:
        raise ArtifactError(f"{d}: cannot be an output folder (a file of that name exists)") from None
    except NotADirectoryError:
        raise ArtifactError(f"{d}: cannot be an output folder (a parent is a regular file)") from None
    except OSError as exc:
        raise ArtifactError(f"{d}: output folder is not writable ({exc.strerror or type(exc).__name__})") from None
    return d


_ACTIVE: contextvars.ContextVar["Publication | None"] = contextvars.ContextVar("robustq_publication", default=None)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it into place, or
    inside :func:`publishing` of ``path``'s folder leave the rename to the publication."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, target.parent) from None
    tmp_path = temp_name(target)
    try:
        yield tmp_path
        pub = _ACTIVE.get()
        if pub is not None and pub.covers(target):
            pub.stage(tmp_path, target)
        else:
            os.replace(tmp_path, target)
    finally:
        pub = _ACTIVE.get()
        if tmp_path.exists() and not (pub is not None and pub.is_staged(tmp_path)):
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def dumps_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys) so equal content gives equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


@contextlib.contextmanager
def manifest_lock(root: Path) -> Iterator[None]:
    """Exclusive lock of ``root``'s manifest (held around load-modify-save)."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise io_error(exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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


_SHA = re.compile(r"^[0-9a-f]{64}$")


def inside_path(rel: Any, where: str) -> str:
    """``rel`` if it is a relative path that stays inside its folder; a one-line error otherwise."""
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"{where}: path must be a non-empty string")
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep):
        raise ValueError(f"{where}: path {rel!r} leaves the artifact folder")
    return rel


def _parse_entry(a: Any, i: int, root: Path) -> Artifact:
    """One manifest entry, every field checked for its type (ValueError names the field)."""
    where = f"artifacts[{i}]"
    if not isinstance(a, dict):
        raise ValueError(f"{where}: expected an object")
    unknown = sorted(set(a) - {"name", "kind", "path", "sha256", "stage", "parents", "config", "meta", "tools"})
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown}")
    for key in ("name", "kind", "path", "sha256", "stage"):
        if not isinstance(a.get(key), str):
            raise ValueError(f"{where}.{key}: expected a string")
    if a["kind"] not in KINDS:
        raise ValueError(f"{where}.kind: {a['kind']!r} is not one of {', '.join(KINDS)}")
    if not _SHA.match(a["sha256"]):
        raise ValueError(f"{where}.sha256: not a sha256 hex digest")
    inside_path(a["path"], f"{where}.path")
    parents = a.get("parents", [])
    if not isinstance(parents, list):
        raise ValueError(f"{where}.parents: expected a list")
    for j, par in enumerate(parents):
        if not isinstance(par, dict) or not all(isinstance(par.get(k), str) for k in ("name", "kind", "sha256", "path")):
            raise ValueError(f"{where}.parents[{j}]: expected an object with string name, kind, sha256, path")
        if not _SHA.match(par["sha256"]):
            raise ValueError(f"{where}.parents[{j}].sha256: not a sha256 hex digest")
    for key in ("config", "meta", "tools"):
        if not isinstance(a.get(key, {}), dict):
            raise ValueError(f"{where}.{key}: expected an object")
    return Artifact(**a, root=root)


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
        recover(root)  # a publication a kill interrupted is completed first
        try:
            text = path.read_bytes().decode()
        except FileNotFoundError:
            return cls(root)
        except NotADirectoryError:
            raise ArtifactError(f"{root}: not a folder") from None
        except OSError as exc:
            raise io_error(exc, path) from None
        except UnicodeDecodeError:
            raise ArtifactError(f"{path}: corrupt manifest (not UTF-8 text)") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"expected an object, got {type(data).__name__}")
            if data.get("schema") != MANIFEST_SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}")
            if not isinstance(data.get("artifacts"), list):
                raise ValueError("'artifacts' must be a list")
            arts = [_parse_entry(a, i, root) for i, a in enumerate(data["artifacts"])]
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ArtifactError(f"{path}: corrupt manifest ({str(exc).splitlines()[0]})") from None
        return cls(root, arts)

    def save(self) -> None:
        data = {"schema": MANIFEST_SCHEMA, "artifacts": [a.to_json() for a in self.artifacts]}
        atomic_write_text(self.root / MANIFEST_NAME, dumps_json(data))

    def find(self, path: str | Path) -> Artifact | None:
        rel = os.path.relpath(Path(path).resolve(), self.root.resolve())
        for art in self.artifacts:
            if os.path.normpath(art.path) == rel:
                return art
        return None

    def by_sha(self, sha: str) -> Artifact | None:
        for art in reversed(self.artifacts):
            if art.sha256 == sha:
                return art
        return None

    def entry(self, path: str | Path, kind: str, stage: str, parents: list[Artifact] = (), config: dict | None = None,
              meta: dict | None = None, sha256: str | None = None) -> Artifact:
        """The entry for ``path`` (inside ``root``; hashed now unless ``sha256`` is given)."""
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        p = Path(path)
        rel = os.path.relpath(p.resolve(), self.root.resolve())
        return Artifact(name=p.name, kind=kind, path=rel, sha256=sha256 or sha256_file(p), stage=stage,
                        parents=[a.as_parent(self.root) for a in parents], config=config or {}, meta=meta or {},
                        tools=tool_versions(), root=self.root)

    def put(self, art: Artifact) -> None:
        """Replace any entry for the same path by ``art`` (in memory)."""
        self.artifacts = [a for a in self.artifacts if a.path != art.path] + [art]

    def add(self, path: str | Path, kind: str, stage: str, parents: list[Artifact] = (),
            config: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> Artifact:
        """Record ``path`` (already written inside ``root``), replacing an entry for the same path.
        The manifest is re-read and saved under its lock, so concurrent stages keep each other's entries."""
        with manifest_lock(self.root):
            current = Manifest.load(self.root)
            art = current.entry(path, kind, stage, parents, config, meta)
            current.put(art)
            current.save()
        self.artifacts = current.artifacts
        return art


class Publication:
    """The outputs of one stage in ``root``, staged and then published with their manifest entries
    (see the module docstring). Use through :func:`publishing`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._root_resolved = self.root.resolve()
        self.staged: dict[Path, Path] = {}  # final path -> staged temp path (a file or a folder)
        self.entries: list[tuple[Path, dict[str, Any]]] = []
        self.artifacts: dict[Path, Artifact] = {}

    def covers(self, target: Path) -> bool:
        return target.resolve().parent == self._root_resolved or self._root_resolved in target.resolve().parents

    def is_staged(self, tmp: Path) -> bool:
        return tmp in self.staged.values()

    def stage(self, tmp: Path, target: Path) -> None:
        """Publish ``tmp`` as ``target`` when the stage succeeds."""
        old = self.staged.get(target)
        if old is not None and old != tmp:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        self.staged[target] = tmp

    def staged_path(self, target: Path) -> Path:
        """Where the bytes of ``target`` are until publication (``target`` itself if not staged)."""
        return self.staged.get(Path(target), Path(target))

    def record(self, path: str | Path, kind: str, stage: str, parents: list[Artifact] = (),
               config: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> None:
        self.entries.append((Path(path), {"kind": kind, "stage": stage, "parents": list(parents),
                                          "config": config, "meta": meta}))

    def commit(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with manifest_lock(self.root):
            recover(self.root, locked=True)
            clean_stale_temps(self.root)
            manifest = Manifest.load(self.root)
            for path, e in self.entries:
                src = self.staged_path(path)
                art = manifest.entry(path, e["kind"], e["stage"], e["parents"], e["config"], e["meta"],
                                     sha256=sha256_file(src))
                manifest.put(art)
                self.artifacts[path] = art
            data = {"schema": MANIFEST_SCHEMA, "artifacts": [a.to_json() for a in manifest.artifacts]}
            mtmp = temp_name(self.root / MANIFEST_NAME)
            journal = self.root / f".publish.{os.getpid()}.{secrets.token_hex(4)}{JOURNAL_SUFFIX}"
            jtmp = temp_name(journal)
            try:
                mtmp.write_text(dumps_json(data))
                moves = [(str(tmp.relative_to(self.root)), str(target.relative_to(self.root)))
                         for target, tmp in self.staged.items()] + [(mtmp.name, MANIFEST_NAME)]
                jtmp.write_text(json.dumps({"moves": moves}))
                os.replace(jtmp, journal)  # from here on the publication is decided
                _replay(self.root, moves)
                journal.unlink()
            finally:
                mtmp.unlink(missing_ok=True)
                jtmp.unlink(missing_ok=True)
            self.staged.clear()

    def discard(self) -> None:
        for tmp in self.staged.values():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        self.staged.clear()


def _replay(root: Path, moves: list[list[str]]) -> None:
    """Carry out a publication's moves (staged temp -> final name, the manifest last); a move whose
    temp is gone was already done."""
    for tmp, target in moves:
        if (root / tmp).exists():
            _replace(root / tmp, root / target)


def recover(root: Path, locked: bool = False) -> None:
    """Finish the publications in ``root`` that a killed process decided but did not complete (its
    journal lists every move), then remove that process's temp files. Without ``locked`` it takes
    the manifest lock if it is free (a live publisher holding it finishes its own work) and does
    nothing in a folder it cannot write."""
    journals = [j for j in root.glob(f".publish.*{JOURNAL_SUFFIX}") if not _pid_alive(int(j.name.split(".")[2]))]
    if not journals:
        return
    if not locked:
        try:
            fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        try:
            recover(root, locked=True)
        finally:
            os.close(fd)
        return
    for j in journals:
        try:
            moves = json.loads(j.read_text())["moves"]
        except (OSError, ValueError, KeyError):
            continue
        _replay(root, moves)
        j.unlink(missing_ok=True)
    clean_stale_temps(root)


def _replace(tmp: Path, target: Path) -> None:
    """Move a staged file or folder onto ``target`` (a folder replaces a folder whole)."""
    if tmp.is_dir() and target.exists():
        old = temp_name(target)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def publishing(root: str | Path) -> Iterator[Publication]:
    """Stage every :func:`atomic_path` write under ``root`` in this block and publish them with the
    entries recorded on the yielded :class:`Publication` when the block succeeds (manifest last)."""
    root = ensure_writable(root, create=False)
    pub = Publication(root)
    token = _ACTIVE.set(pub)
    try:
        yield pub
        try:
            pub.commit()
        except OSError as exc:
            raise io_error(exc) from None
    finally:
        _ACTIVE.reset(token)
        pub.discard()


def stage_folder(target: Path) -> Path:
    """A fresh temp folder for the contents of folder ``target``; inside :func:`publishing` it is
    published with the stage, otherwise the caller moves it into place with :func:`commit_folder`."""
    tmp = temp_name(target)
    tmp.mkdir(parents=True)
    return tmp


def commit_folder(tmp: Path, target: Path) -> None:
    pub = _ACTIVE.get()
    if pub is not None and pub.covers(target):
        pub.stage(tmp, target)
    else:
        _replace(tmp, target)


# --------------------------------------------------------------------------- reading


def _mismatch(f: Path, actual: str, listed: str) -> ArtifactError:
    return ArtifactError(f"{f}: sha256 {actual[:12]}... does not match the manifest ({listed[:12]}...); refusing a "
                         "modified artifact (if a stage writing it was interrupted, run that stage again)")


def verify_artifact(art: Artifact) -> Artifact:
    """Raise if the artifact's file is missing or its bytes changed since it was recorded."""
    f = art.file
    if not f.is_file():
        raise ArtifactError(f"{f}: listed in the manifest but missing")
    try:
        actual = sha256_file(f)
    except OSError as exc:
        raise io_error(exc, f) from None
    if actual != art.sha256:
        raise _mismatch(f, actual, art.sha256)
    return art


def read_verified(path: Path, sha256: str) -> bytes:
    """The bytes of ``path``, read once and checked against ``sha256``: exactly what was hashed."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise io_error(exc, path) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise _mismatch(Path(path), actual, sha256)
    return data


def private_folder(prefix: str = "robustq-") -> Path:
    """A new folder only this user can read or write (mode 0700)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def private_copy(path: Path, sha256: str, folder: Path) -> Path:
    """Copy ``path`` into the private ``folder`` while hashing it; the copy (returned) holds exactly
    the bytes that matched ``sha256``, whatever happens to ``path`` afterwards."""
    dest = folder / Path(path).name
    h = hashlib.sha256()
    try:
        with open(path, "rb") as src, open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
    except OSError as exc:
        raise io_error(exc, path) from None
    if h.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise _mismatch(Path(path), h.hexdigest(), sha256)
    return dest


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
        try:
            sha = sha256_file(p)
        except OSError as exc:
            raise io_error(exc, p) from None
        return Artifact(name=p.name, kind=kind or "onnx", path=p.name, sha256=sha, stage="external", root=p.parent)
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
