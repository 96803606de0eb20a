"""Your own model and your own data, end to end through the CLI: a MobileNetV2-style and a
ResNet-style network (``tests/own_models.py``, named as ``[model] factory``) trained with QAT on
an ``npz`` file and on a ``folder`` of PNGs written here from the digits, exported (``integer``,
``qdq``), compiled (x86, fpga-sim, aarch64 under qemu) and verified. The deployed modules equal
the numpy integer reference bit for bit, and the twin agrees with them on at least 99.9% of the
test images, disagreements that rounding near-ties explain aside (export.reference.deviation).
Also: the refusals (no or another factory, unsupported layers before training) and the README's
library example."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import robustq_deploy
from robustq_deploy.data import load_dataset
from robustq_deploy.export import export_model
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.export.reference.deviation import argmax_may_differ, rounding_deviation
from robustq_deploy.manifest import Manifest
from robustq_deploy.train import read_checkpoint

from .helpers import assert_within_rounding, run_cli

OWN_MODELS = Path(__file__).resolve().parent / "own_models.py"
NETS = {"mobilenet": ("mobilenet_v2", {"stem": 8, "last": 32, "widths": [8, 12, 16]}), "resnet": ("resnet", {"width": 8})}


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_config(path: Path, factory: str, kwargs: dict, data: dict, epochs: int = 2) -> Path:
    data_lines = "\n".join(f"{k} = {_toml(v)}" for k, v in data.items())
    path.write_text(f"""version = 1
name = "own-model"

[data]
{data_lines}

[model]
factory = {_toml(factory)}
kwargs = {_toml(kwargs)}

[quant]
weight_bits = 8
act_bits = 8

[train]
method = "qat"
epochs = {epochs}
batch_size = 64
lr = 0.01
seed = 0
threads = 1

[export]
format = "integer"

[compile]
target = "x86"

[verify]
attacks = ["pgd"]
eps = 0.05
steps = 3
float_model = false
amplification = false
""")
    return path


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory) -> Path:
    """The digits as a user's npz file: floats in [0, 1], channels last, with a test split."""
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=tr.images.transpose(0, 2, 3, 1) / 255.0, y=tr.labels, x_test=te.images.transpose(0, 2, 3, 1),
             y_test=te.labels)
    return path


@pytest.fixture(scope="module")
def digits_pngs(tmp_path_factory) -> Path:
    """All 1797 digits as 8x8 grayscale PNGs, one folder per class."""
    root = tmp_path_factory.mktemp("pngs")
    for split in ("train", "test"):
        ds = load_dataset("digits", split)
        for i, (img, label) in enumerate(zip(ds.images, ds.labels)):
            folder = root / f"digit-{label}"
            folder.mkdir(exist_ok=True)
            Image.fromarray(img[0]).save(folder / f"{split}-{i:04d}.png")
    return root


def _run(tmp: Path, capsys, net: str, data: dict) -> Path:
    fn, kwargs = NETS[net]
    cfg = write_config(tmp / "config.toml", f"{OWN_MODELS}:{fn}", kwargs, data)
    out = tmp / "out"
    code, stdout, err = run_cli(["-q", "run", cfg, "--out", out], capsys)
    assert code == 0, err
    return out


@pytest.fixture(scope="module", params=list(NETS))
def npz_run(request, tmp_path_factory, digits_npz) -> tuple[str, Path]:
    """``robustq run`` on the npz file (integer export, x86), then the qdq export and the fpga-sim
    build of the same checkpoint, through the CLI."""
    net = request.param
    capsys = request.getfixturevalue("capsys_module")
    out = _run(tmp_path_factory.mktemp(f"npz-{net}"), capsys, net, {"dataset": "npz", "path": str(digits_npz)})
    factory = f"{OWN_MODELS}:{NETS[net][0]}"
    for args in (["export", out / "model.safetensors", "--format", "qdq", "--model", factory, "--out", out],
                 ["compile", out / "model.integer.onnx", "--target", "fpga-sim", "--out", out],
                 ["compile", out / "model.qdq.onnx", "--target", "x86", "--out", out / "qdq-x86"]):
        code, _, err = run_cli(["-q", *args], capsys)
        assert code == 0, err
    return net, out


@pytest.fixture(scope="module")
def capsys_module():
    """run_cli needs a capture object; module fixtures cannot use pytest's capsys."""
    class _Capture:
        def readouterr(self):
            return "", ""
    return _Capture()


def _test_split(out: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits", "test")
    return ds.as_float(), ds.labels


def _library(out: Path, target: str) -> Path:
    return next(a.file for a in Manifest.load(out).artifacts if a.kind == "compiled" and a.meta["target"] == target)


def test_checkpoint_records_the_factory_not_its_code(npz_run):
    net, out = npz_run
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        record = json.loads(f.metadata()["robustq"])
    src = record["source"]
    assert src["factory"] == f"{OWN_MODELS}:{NETS[net][0]}" and src["kwargs"] == NETS[net][1]
    assert re.fullmatch(r"[0-9a-f]{64}", src["sha256"]) and src["source"] == "own_models.py"
    assert record["config"]["model"] == {"arch": None, "factory": src["factory"], "kwargs": NETS[net][1]}


def test_report_agreement_and_accuracy(npz_run):
    net, out = npz_run
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "npz" and report["n"] == 360 and report["deployed"] == ["onnxruntime", "tvm-x86"]
    assert report["models"]["twin"]["clean_acc"] > 0.5  # two short epochs
    for eng, a in report["agreement"].items():
        assert a["clean"] + a["clean_near_ties"] / report["n"] >= 0.999, (eng, a)
    assert not report["flags"]


def test_deployed_modules_equal_the_reference_bit_for_bit(npz_run):
    net, out = npz_run
    x, _ = _test_split(out)
    sess = ReferenceSession(onnx.load(str(out / "model.integer.onnx")))
    (want,) = sess.run(None, {"input": x})
    for target in ("x86", "fpga-sim"):
        got = robustq_deploy.load(_library(out, target))(x)
        assert np.asarray(got).tobytes() == want.tobytes(), target


def test_twin_agrees_with_the_deployed_module(npz_run):
    """At least 99.9% argmax agreement; a disagreement counts only if no rounding near-tie of the
    twin's QDQ graph can explain it (the verify stage's rule)."""
    net, out = npz_run
    twin, _ = read_checkpoint(out / "model.safetensors", model=f"{OWN_MODELS}:{NETS[net][0]}")
    x, y = _test_split(out)
    with torch.no_grad():
        t = twin(torch.from_numpy(x)).numpy()
    deployed = robustq_deploy.load(_library(out, "x86"))(x)
    qdq = export_model(twin, "qdq", 21)
    ref = ReferenceSession(qdq).run(None, {"input": x})[0]
    (bound,) = rounding_deviation(qdq, {"input": x}).values()
    unexplained = (t.argmax(1) != deployed.argmax(1)) & ~argmax_may_differ(ref, bound)
    assert 1 - unexplained.mean() >= 0.999
    assert (deployed.argmax(1) == y).mean() > 0.5


def test_fpga_sim_records_where_layers_run(npz_run):
    net, out = npz_run
    meta = Manifest.load(out).find(_library(out, "fpga-sim")).meta["accel"]
    host = {h["name"]: h["reasons"] for h in meta["host_layers"]}
    if net == "mobilenet":  # depthwise convolutions stay on the host, and say why
        assert host and all("grouped convolution" in r[0] for r in host.values())
    assert meta["cost"]["totals"]["layers_on_accelerator"] > 0


def test_qdq_export_compiled_within_the_rounding_bound(npz_run):
    net, out = npz_run
    x, _ = _test_split(out)
    got = robustq_deploy.load(out / "qdq-x86" / "model.x86.so")(x[:64])
    assert_within_rounding(got, out / "model.qdq.onnx", x[:64])


def test_verify_fpga_sim_needs_the_named_factory(npz_run, tmp_path, capsys):
    net, out = npz_run
    lib = _library(out, "fpga-sim")
    code, _, err = run_cli(["verify", lib, "--out", tmp_path / "v0", "--limit", "20"], capsys)
    assert code == 2 and "name it with --model" in err and not (tmp_path / "v0").exists()
    other = f"{OWN_MODELS}:{NETS['resnet' if net == 'mobilenet' else 'mobilenet'][0]}"
    code, _, err = run_cli(["verify", lib, "--model", other, "--out", tmp_path / "v1", "--limit", "20"], capsys)
    assert code == 2 and "is not the one the checkpoint was trained with" in err
    code, out_text, err = run_cli(["-q", "verify", lib, "--model", f"{OWN_MODELS}:{NETS[net][0]}", "--limit", "40",
                                   "--steps", "2", "--no-float", "--out", tmp_path / "v2"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "v2" / "report.json").read_text())
    assert report["deployed"] == ["onnxruntime", "fpga-sim"] and report["n"] == 40


@pytest.mark.qemu
def test_aarch64_equals_the_reference(npz_run, tmp_path, capsys):
    from tests.compile.helpers import require_qemu

    require_qemu()
    net, out = npz_run
    code, _, err = run_cli(["-q", "compile", out / "model.integer.onnx", "--target", "aarch64", "--out", tmp_path],
                           capsys)
    assert code == 0, err
    x, _ = _test_split(out)
    x = x[:32]
    (want,) = ReferenceSession(onnx.load(str(out / "model.integer.onnx"))).run(None, {"input": x})
    got = robustq_deploy.load(tmp_path / "model.aarch64.so")(x)
    assert np.asarray(got).tobytes() == want.tobytes()


@pytest.mark.parametrize("net", list(NETS))
def test_folder_of_pngs_end_to_end(net, digits_pngs, tmp_path, capsys):
    out = _run(tmp_path, capsys, net, {"dataset": "folder", "path": str(digits_pngs), "test_fraction": 0.2})
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "folder" and report["n"] == 359  # 20% of 1797, seeded split
    for eng, a in report["agreement"].items():
        assert a["clean"] + a["clean_near_ties"] / report["n"] >= 0.999, (eng, a)
    twin, cfg = read_checkpoint(out / "model.safetensors", model=f"{OWN_MODELS}:{NETS[net][0]}")
    from robustq_deploy.checkpoint import load_split

    x, y, ds = load_split(cfg, "test")
    assert ds.classes == tuple(f"digit-{i}" for i in range(10))
    (want,) = ReferenceSession(onnx.load(str(out / "model.integer.onnx"))).run(None, {"input": x.numpy()})
    assert robustq_deploy.load(out / "model.x86.so")(x.numpy()).tobytes() == want.tobytes()
    # the same images as a folder, given to verify with --data: one more split of the same files
    code, _, err = run_cli(["-q", "verify", out / "model.x86.so", "--model", f"{OWN_MODELS}:{NETS[net][0]}",
                            "--data", digits_pngs, "--limit", "30", "--steps", "2", "--no-float", "--out",
                            tmp_path / "v"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["verify", out / "model.x86.so", "--model", f"{OWN_MODELS}:{NETS[net][0]}",
                            "--data-dir", digits_pngs, "--out", tmp_path / "v2"], capsys)
    assert code == 2 and "data.data_dir (--data-dir): not used by dataset 'folder'" in err


def test_unsupported_layers_are_refused_before_training(tmp_path, digits_npz, capsys):
    cfg = write_config(tmp_path / "c.toml", f"{OWN_MODELS}:unsupported", {}, {"dataset": "npz", "path": str(digits_npz)})
    t0 = time.perf_counter()
    code, _, err = run_cli(["train", "--config", cfg, "--out", tmp_path / "o"], capsys)
    assert code == 2 and time.perf_counter() - t0 < 20
    line = err.strip()
    assert "\n" not in line and line.startswith("error: cannot quantize the model")
    for part in ("act (GELU)", "rnn (LSTM)", "custom autograd function Doubler.apply"):
        assert part in line
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_quantized_method_on_a_float_spec_says_what_is_set(tmp_path, digits_npz, capsys):
    cfg = write_config(tmp_path / "c.toml", f"{OWN_MODELS}:resnet", {"width": 4}, {"dataset": "npz", "path": str(digits_npz)})
    code, _, err = run_cli(["train", "--config", cfg, "--set", "quant.weight_bits=32", "--set", "quant.act_bits=32",
                            "--out", tmp_path / "o"], capsys)
    assert code == 2 and "'qat' trains a quantized model, but [quant] sets weight_bits = 32 and act_bits = 32" in err
    code, _, err = run_cli(["train", "--config", cfg, "--set", "quant.act_bits=32", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "weight_bits = 8 and act_bits = 32, but no layer ends up quantized" in err


def test_readme_example(tmp_path, digits_npz, monkeypatch, capsys):
    """The README's "Your own model and data" section as written: its factory file, its config (the
    per-layer override must name a layer of that model) and its library example, run on the digits."""
    from robustq_deploy.validation import load_config
    from robustq_deploy.models import build_model_for

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    factory, example = re.findall(r"```python\n(.*?)```", section, re.S)
    (toml,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mynet.py").write_text(factory)
    (tmp_path / "my-digits.npz").write_bytes(digits_npz.read_bytes())
    (tmp_path / "my.toml").write_text(toml)
    cfg = load_config(tmp_path / "my.toml")
    twin = build_model_for(cfg.model, cfg.quant, 10, (1, 8, 8))
    assert dict(twin.named_modules())["3"].w_q.bits == 4 and dict(twin.named_modules())["3"].groups == 16
    exec(compile(example, "README.md", "exec"), {})
    assert "tvm-x86" in capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["deployed"] == ["onnxruntime", "tvm-x86"] and report["dataset"] == "npz" and report["n"] == 100


MNIST_NET = {"stem": 16, "stem_stride": 2, "last": 96}  # 28x28 -> 14x14 after the stem
MNIST_TRAIN = {"epochs": 5, "batch_size": 128, "lr": 0.005, "seed": 0, "threads": 1}


@pytest.fixture(scope="module")
def mnist_npz(tmp_path_factory) -> Path:
    """MNIST (60k / 10k) as a user's npz file of uint8 [N, 28, 28] arrays."""
    tr, te = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    np.savez(path, x=tr.images[:, 0], y=tr.labels, x_test=te.images[:, 0], y_test=te.labels)
    return path


@pytest.mark.slow
def test_mnist_mobilenet_v2_qat_int8_deployed_accuracy(mnist_npz, tmp_path):
    """MobileNetV2-style with BatchNorm, 5 epochs of QAT int8 on all of MNIST: the deployed x86
    module reaches at least 98.5% clean accuracy on the 10k test images (and equals the reference)."""
    factory = f"{OWN_MODELS}:mobilenet_v2"
    cfg = {"model": {"kwargs": MNIST_NET}, "quant": {"weight_bits": 8, "act_bits": 8},
           "train": {"method": "qat", **MNIST_TRAIN}}
    ckpt = robustq_deploy.train(factory, mnist_npz, cfg, out=tmp_path)
    onnx_art = robustq_deploy.export(ckpt, "integer", model=factory)
    lib = robustq_deploy.compile(onnx_art, "x86")
    te = load_dataset("mnist", "test")
    x = te.as_float()
    logits = robustq_deploy.load(lib.file)(x)
    deployed = float((logits.argmax(1) == te.labels).mean())
    (want,) = ReferenceSession(onnx.load(str(onnx_art.file))).run(None, {"input": x[:1000]})
    assert logits[:1000].tobytes() == want.tobytes()
    print(json.dumps({"model": "mobilenet_v2", "method": "qat", "bits": 8, "deployed_clean_acc": deployed,
                      "twin_clean_acc": ckpt.meta["test_acc"], "train_seconds": ckpt.meta["train_seconds"]}))
    assert deployed >= 0.985


@pytest.mark.slow
def test_mnist_mobilenet_v2_float_reference(mnist_npz, tmp_path):
    """The same network in float, trained the same way (natural training, 5 epochs): the reference
    the QAT number is compared with in the closing note."""
    cfg = {"model": {"kwargs": MNIST_NET}, "quant": {"weight_bits": 32, "act_bits": 32},
           "train": {"method": "natural", **MNIST_TRAIN}}
    ckpt = robustq_deploy.train(f"{OWN_MODELS}:mobilenet_v2", mnist_npz, cfg, out=tmp_path)
    print(json.dumps({"model": "mobilenet_v2", "method": "natural", "bits": 32, "clean_acc": ckpt.meta["test_acc"],
                      "train_seconds": ckpt.meta["train_seconds"]}))
    assert ckpt.meta["test_acc"] >= 0.985


@pytest.mark.parametrize("ref,message", [
    ("own_models.py", "expected 'path/to/file.py:function' or 'module.path:function'"),
    ("nowhere/net.py:build", "no such file"),
    ("no_such_module_xyz:build", "cannot find module 'no_such_module_xyz'"),
    (f"{OWN_MODELS}:nope", "has no attribute 'nope'"),
    (f"{OWN_MODELS}:Doubler.forward", "with kwargs {}: TypeError"),
    (f"{OWN_MODELS}:NETS", "has no attribute 'NETS'"),
])
def test_bad_factory_references_are_one_line(ref, message):
    from robustq_deploy.config import ModelConfig, QuantConfig
    from robustq_deploy.errors import ConfigError
    from robustq_deploy.models import build_model_for

    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        build_model_for(ModelConfig(arch=None, factory=ref), QuantConfig(), 10, (1, 8, 8))
    assert "\n" not in str(exc.value)


def test_factory_by_module_path_and_class_count_check():
    from robustq_deploy.config import ModelConfig, QuantConfig
    from robustq_deploy.errors import ConfigError
    from robustq_deploy.models import build_model_for

    twin = build_model_for(ModelConfig(arch=None, factory="tests.own_models:resnet", kwargs={"width": 4}),
                           QuantConfig(), 10, (1, 8, 8))
    assert twin.source["factory"] == "tests.own_models:resnet" and twin.source["source"] == "own_models.py"
    with pytest.raises(ConfigError, match="the model outputs 10 classes, the dataset has 3"):
        build_model_for(ModelConfig(arch=None, factory="tests.own_models:resnet"), QuantConfig(), 3, (1, 8, 8))


def test_config_model_section_is_checked(tmp_path, capsys):
    code, _, err = run_cli(["train", "--set", 'model.arch="mynet:TinyMobileNet"', "--out", tmp_path], capsys)
    assert code == 2 and "or give your own float model as model.factory" in err
    code, _, err = run_cli(["train", "--set", "model.kwargs={ width = 4 }", "--out", tmp_path], capsys)
    assert code == 2 and "model.kwargs: arguments of model.factory, but no factory is given" in err
    code, _, err = run_cli(["train", "--set", 'model.arch="resnet20"', "--set", f'model.factory="{OWN_MODELS}:resnet"',
                            "--out", tmp_path], capsys)
    assert code == 2 and "give one of them" in err


def test_library_api_with_a_module_object(tmp_path, digits_npz):
    """A float module given to rq.train; export rebuilds the twin only from a module of the same
    layers, given again."""
    from robustq_deploy.errors import ArtifactError
    from tests.own_models import ResNetStyle

    cfg = {"data": {"train_limit": 128, "test_limit": 64}, "train": {"method": "qat", "epochs": 1, "threads": 1}}
    ckpt = robustq_deploy.train(ResNetStyle(width=4), digits_npz, cfg, out=tmp_path)
    assert ckpt.file == tmp_path / "model.safetensors" and ckpt.config["model"] == {"arch": None, "factory": None,
                                                                                   "kwargs": {}}
    with pytest.raises(ArtifactError, match=r"given as a Python object \(tests.own_models.ResNetStyle\)"):
        robustq_deploy.export(ckpt, "integer")
    with pytest.raises(ArtifactError, match="does not have the layers of the checkpoint's model"):
        robustq_deploy.export(ckpt, "integer", model=ResNetStyle(width=8))
    art = robustq_deploy.export(ckpt, "integer", model=ResNetStyle(width=4))
    assert art.file == tmp_path / "model.integer.onnx" and art.parents[0]["sha256"] == ckpt.sha256
