"""Compile refusals that used to end in tracebacks: a float model for the accelerator, a target
whose cross toolchain is missing; and a float model compiled for x86 is said to be unquantized."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import run_cli

from .conftest import refused


@pytest.fixture
def float_model(tmp_path):
    """conv -> relu -> flatten -> gemm, all float: no quantization op at all."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((10, 4 * 6 * 6)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "float", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    path = tmp_path / "float.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_float_model_for_the_accelerator_is_refused(float_model, tmp_path, capsys):
    err = refused(capsys, "compile", float_model, "--target", "fpga-sim", "--out", tmp_path / "out")
    assert "no layer of this model can run on the accelerator" in err
    assert not (tmp_path / "out").exists()


def test_float_model_for_x86_is_called_unquantized(float_model, tmp_path, capsys):
    code, out, err = run_cli(["compile", float_model, "--target", "x86", "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    assert "warning: this model is not quantized" in err and "float compute left" in out


def test_missing_cross_compiler(float_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    err = refused(capsys, "compile", float_model, "--target", "aarch64", "--out", tmp_path / "out")
    assert "aarch64-linux-gnu-gcc is not installed; install with: apt-get install" in err


def test_a_missing_cross_compiler_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """``robustq run`` for aarch64 without its cross compiler stops at the config check, not
    after training and export."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "arm"\n[data]\ndataset = "digits"\n[compile]\ntarget = "aarch64"\n')
    err = refused(capsys, "run", cfg, "--out", tmp_path / "out")
    assert "aarch64-linux-gnu-gcc is not installed" in err
    assert not (tmp_path / "out").exists()


def test_a_target_file_in_a_run_config(tmp_path):
    """A target ``.toml`` in ``[compile]`` passes the config check (as ``robustq compile --target
    FILE`` takes it), and its description is what the check parsed."""
    from robustq_deploy.config import RunConfig, replace
    from robustq_deploy.targets import shipped
    from robustq_deploy.validation import validated

    f = tmp_path / "mine.toml"
    f.write_text((shipped() / "x86.toml").read_text().replace('name = "x86"', 'name = "mine"'))
    checked = validated(replace(RunConfig(), **{"compile.target": str(f)}))
    assert checked.compile.target.name == "mine" and checked.compile.target_name == str(f)
