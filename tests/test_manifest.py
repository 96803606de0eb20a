"""Manifest: hashes, refusal of modified artifacts, lineage, atomic writes."""
import json

import pytest

from robustq_deploy.errors import ArtifactError
from robustq_deploy.manifest import Manifest, atomic_path, find_ancestor, resolve_input, sha256_file


def test_add_resolve_and_refuse_modified(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"abc")
    art = Manifest.load(tmp_path).add(f, "onnx", "export", config={"k": 1})
    assert art.sha256 == sha256_file(f)
    assert resolve_input(f, kind="onnx").sha256 == art.sha256
    f.write_bytes(b"abd")
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        resolve_input(f, kind="onnx")


def test_unlisted_file_refused_unless_external_allowed(tmp_path):
    f = tmp_path / "lib.so"
    f.write_bytes(b"\x7fELF")
    with pytest.raises(ArtifactError, match="not listed"):
        resolve_input(f, kind="compiled")
    ext = resolve_input(f, kind="onnx", require_manifest=False)
    assert ext.stage == "external"


def test_wrong_kind_and_corrupt_manifest(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x")
    Manifest.load(tmp_path).add(f, "checkpoint", "train")
    with pytest.raises(ArtifactError, match="is a checkpoint artifact, expected onnx"):
        resolve_input(f, kind="onnx")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        Manifest.load(tmp_path)


def test_lineage_across_directories(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    ck = a_dir / "model.safetensors"
    ck.write_bytes(b"weights")
    ck_art = Manifest.load(a_dir).add(ck, "checkpoint", "train")
    ox = b_dir / "model.onnx"
    b_dir.mkdir()
    ox.write_bytes(b"graph")
    ox_art = Manifest.load(b_dir).add(ox, "onnx", "export", parents=[ck_art])
    assert json.loads((b_dir / "manifest.json").read_text())["artifacts"][0]["parents"][0]["path"] == "../a/model.safetensors"
    assert find_ancestor(ox_art, "checkpoint").sha256 == ck_art.sha256
    ck.write_bytes(b"tampered")
    with pytest.raises(ArtifactError):
        find_ancestor(ox_art, "checkpoint")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []
