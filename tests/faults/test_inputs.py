"""Inputs outside the pixel grid: non-finite values are refused in one line by every engine;
finite values of any size saturate to the same level on every engine, so every deployed form
returns the same logits for them as the numpy reference (and as onnxruntime)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import robustq_deploy
from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig
from robustq_deploy.errors import InputError
from robustq_deploy.export.reference import ReferenceSession

from .conftest import refused

EXTREMES = np.array([1e30, -1e30, 3.4e38, 2.0, -0.5, 1.5, 255.0, -7.0], np.float32)


def _extreme_images(n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    x.reshape(n, -1)[:, ::3] = rng.choice(EXTREMES, size=x.reshape(n, -1)[:, ::3].shape)
    return x


@pytest.fixture(scope="module")
def engines(artifacts, tmp_path_factory):
    """The fused x86 library, the per-op x86 library (onnxruntime's float rescale), the fpga-sim
    build and onnxruntime, all of one QDQ model."""
    out = tmp_path_factory.mktemp("inputs")
    per_op = compile_stage(artifacts / "model.qdq.onnx", CompileConfig(target="x86", requant="float"), out / "float")
    fpga = compile_stage(artifacts / "model.qdq.onnx", CompileConfig(target="fpga-sim"), out / "fpga")
    return {"x86": artifacts / "model.x86.so", "x86-float-requant": per_op.file, "fpga-sim": fpga.file,
            "onnxruntime": artifacts / "model.qdq.onnx"}


def test_out_of_range_values_saturate_alike(artifacts, engines):
    x = _extreme_images()
    clipped = np.clip(x, 0.0, 1.0)
    outs = {name: robustq_deploy.load(path)(x) for name, path in engines.items()}
    for name, y in outs.items():  # saturation is the clamp to the grid's ends, on every engine
        np.testing.assert_array_equal(y, robustq_deploy.load(engines[name])(clipped), err_msg=name)
    sess = ReferenceSession(onnx.load(str(artifacts / "model.qdq.onnx")))
    ref = sess.run(None, {"input": x})[0]
    np.testing.assert_array_equal(ref, sess.run(None, {"input": clipped})[0])
    np.testing.assert_array_equal(outs["x86"], outs["fpga-sim"])  # both fixed point


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(engines, bad):
    x = _extreme_images(2)
    x[1, 0, 3, 3] = bad
    for name, path in engines.items():
        with pytest.raises(InputError, match="non-finite"):
            robustq_deploy.load(path)(x)


def test_cli_refuses_nan(artifacts, tmp_path, capsys):
    x = _extreme_images(2)
    x[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    err = refused(capsys, "infer", artifacts / "model.x86.so", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert "1 non-finite value" in err and not (tmp_path / "y.npy").exists()
