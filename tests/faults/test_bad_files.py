"""Bad input for every reader: each gets one line ``error: ...`` naming the problem, exit code 2,
no traceback, and nothing written. Readers: ONNX, .npy, config, manifest, report, checkpoint, dataset."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from .conftest import refused

# ----------------------------------------------------------------------------- ONNX


def _opset(path, version):
    m = onnx.load(str(path))
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = version
    return m.SerializeToString()


@pytest.mark.parametrize("content,msg", [
    (b"", "not a valid ONNX model"),
    (b"\x08\x07garbage that is not protobuf \xff\xfe", "not a valid ONNX model"),
    ("opset30", "declares opset 30 of the ONNX domain"),
])
def test_bad_onnx(fresh, tmp_path, capsys, content, msg):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(_opset(fresh / "model.qdq.onnx", 30) if content == "opset30" else content)
    err = refused(capsys, "compile", bad, "--out", tmp_path / "c")
    assert msg in err
    assert not (tmp_path / "c" / "model.x86.so").exists()


# ----------------------------------------------------------------------------- .npy inputs


@pytest.mark.parametrize("make,msg", [
    (lambda p: p.write_bytes(b""), "cannot read as .npy"),
    (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "cannot read as .npy"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "cannot read as .npy"),
    (lambda p: np.save(p, np.zeros((2, 1, 8, 8), np.int16)), "dtype int16"),
    (lambda p: np.save(p, np.full((2, 1, 8, 8), np.nan, np.float32)), "non-finite"),
    (lambda p: np.save(p, np.full((2, 1, 8, 8), np.inf, np.float32)), "non-finite"),
    (lambda p: np.save(p, np.zeros((2, 3, 8, 8), np.float32)), "shape [2, 3, 8, 8]"),
])
def test_bad_npy(fresh, tmp_path, capsys, make, msg):
    x = tmp_path / "x.npy"
    make(x)
    for engine in ("model.x86.so", "model.qdq.onnx"):
        err = refused(capsys, "infer", fresh / engine, "--input", x, "--output", tmp_path / "y.npy")
        assert msg in err
    assert not (tmp_path / "y.npy").exists()


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("text,msg", [
    (b"\xff\xfe[train]\n", "not valid TOML"),
    (b"[train\nlr = 1", "not valid TOML"),
    (b"[train]\nlr = inf\n", "train.lr: must be a finite number"),
    (b"[train]\nlr = nan\n", "train.lr: must be a finite number"),
    (b"[train.attack]\neps = 8\n", "train.attack.eps: must be in [0, 1], got 8; inputs are in [0, 1], so for 8/255"),
    (b"[verify]\neps = 2.0\n", "verify.eps: must be in [0, 1]"),
    (b"[check]\nmin_clean = 1.5\n", "check.min_clean: must be a fraction in [0, 1]"),
    (b"[export]\nopset = 99\n", "export.opset: 99 is outside"),
    (b"[compile]\nrequant = \"fast\"\n", "compile.requant: unknown value"),
    (b"[compile]\ntarget = \"x86:nosuchcpu\"\n", "LLVM does not know the CPU"),
    (b"[compile]\ntarget = \"missing.toml\"\n", "compile.target: cannot read target file"),
    (b"[compile]\ntune_trials = -1\n", "compile.tune_trials: must be >= 0"),
    (b"[quant.layers.fc9]\nweight_bits = 4\n", "has no layer 'fc9'; its layers: conv1"),
    (b"[model]\narch = \"nonet\"\n", "model.arch: unknown value"),
])
def test_bad_config_is_refused_before_any_stage(tmp_path, capsys, text, msg):
    base = (b"name = \"bad\"\n[data]\ndataset = \"digits\"\n[model]\narch = \"digits-cnn\"\n"
            if b"[model]" not in text else b"name = \"bad\"\n[data]\ndataset = \"digits\"\n")
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(base + text)
    err = refused(capsys, "run", cfg, "--out", tmp_path / "out")
    assert msg in err, err
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_set_method_starts_from_its_own_params(tmp_path, capsys):
    """The README's `--set 'train.method="natural"'` on the built-in (pgd-at) config."""
    from robustq_deploy.cli import apply_overrides
    from robustq_deploy.pipeline import demo_config

    cfg = apply_overrides(demo_config(), ('train.method="natural"',))
    assert cfg.train.method == "natural" and cfg.train.params == {}
    kept = apply_overrides(demo_config(), ('train.method="trades"', "train.params.beta=2.0"))
    assert kept.train.params == {"beta": 2.0}


# ----------------------------------------------------------------------------- manifest


@pytest.mark.parametrize("content,msg", [
    ("[]", "expected an object, got list"),
    ('"a string"', "expected an object, got str"),
    ('{"schema": 1, "artifacts": {}}', "'artifacts' must be a list"),
    ('{"schema": 2, "artifacts": []}', "schema 2"),
    ("PARENTS_STRING", "parents: expected a list"),
    ("BAD_SHA", "sha256: not a sha256 hex digest"),
    ("\xff", "corrupt manifest"),
])
def test_bad_manifest(fresh, tmp_path, capsys, content, msg):
    m = json.loads((fresh / "manifest.json").read_text())
    if content == "PARENTS_STRING":
        m["artifacts"][-1]["parents"] = "model.qdq.onnx"
        content = json.dumps(m)
    elif content == "BAD_SHA":
        m["artifacts"][0]["sha256"] = "zz"
        content = json.dumps(m)
    (fresh / "manifest.json").write_bytes(content.encode("latin-1"))
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 1, 8, 8), np.float32))
    err = refused(capsys, "infer", fresh / "model.x86.so", "--input", x, "--output", tmp_path / "y.npy")
    assert msg in err


# ----------------------------------------------------------------------------- checkpoint


def _rewrite_checkpoint(path, record):
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path), metadata={"robustq": json.dumps(record)})


@pytest.mark.parametrize("change,msg", [
    (lambda r: {}, "malformed checkpoint metadata (arch, num_classes, input_shape, config"),
    (lambda r: {**r, "input_shape": [3, 100000, 100000]}, "refusing to build it"),
    (lambda r: {**r, "input_shape": "1x8x8"}, "input_shape missing or of the wrong type"),
    (lambda r: {**r, "config": {"train": {"lr": "fast"}}}, "malformed checkpoint config"),
    (lambda r: {**r, "arch": "nonet"}, "cannot rebuild the model"),
])
def test_bad_checkpoint_metadata(fresh, tmp_path, capsys, change, msg):
    """Checkpoints recorded with these bytes (as if a buggy tool had written them)."""
    from safetensors import safe_open

    from robustq_deploy.manifest import Manifest

    ck = fresh / "model.safetensors"
    with safe_open(str(ck), framework="pt") as f:
        record = json.loads(f.metadata()["robustq"])
    _rewrite_checkpoint(ck, change(record))
    Manifest.load(fresh).add(ck, "checkpoint", "train")
    err = refused(capsys, "export", ck, "--out", tmp_path / "e")
    assert msg in err


def test_non_finite_weights_are_refused_at_export(fresh, tmp_path, capsys):
    """A checkpoint whose weights hold NaN (as training with an infinite learning rate wrote them
    before the config refused it) is not exported."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from robustq_deploy.manifest import Manifest

    ck = fresh / "model.safetensors"
    with safe_open(str(ck), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() >= 2)
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    save_file(tensors, str(ck), metadata=meta)
    Manifest.load(fresh).add(ck, "checkpoint", "train")
    assert "non-finite values" in refused(capsys, "export", ck, "--out", tmp_path / "e")
    assert not (tmp_path / "e" / "model.qdq.onnx").exists()


def test_not_a_safetensors_file(fresh, tmp_path, capsys):
    from robustq_deploy.manifest import Manifest

    ck = fresh / "model.safetensors"
    ck.write_bytes(b"\x80\x04pickle?")
    Manifest.load(fresh).add(ck, "checkpoint", "train")
    assert "not a robustq checkpoint" in refused(capsys, "export", ck, "--out", tmp_path / "e")


# ----------------------------------------------------------------------------- dataset


def test_corrupt_dataset_files(fresh, tmp_path, capsys):
    """verify with a --data-dir whose MNIST files are garbage: a checksum error naming the file."""
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (d / name).write_bytes(b"not gzip")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\ndataset = "mnist"\ndata_dir = "{tmp_path / "data"}"\n[model]\narch = "mnist-cnn"\n')
    err = refused(capsys, "run", cfg, "--out", tmp_path / "out")
    assert "t10k-images-idx3-ubyte.gz" in err
