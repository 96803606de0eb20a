"""Every registered architecture, in every export format, compiles bit-exact against the numpy
reference (the registries are iterated, not written out: a new architecture or format is tested
the day it is registered). A format that cannot hold an architecture's layers must say so in one
line, and only where :data:`REFUSED` expects it."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from robustq_deploy.compile import compile_stage
from robustq_deploy.config import CompileConfig, LayerQuantConfig, QuantConfig
from robustq_deploy.errors import UnsupportedError
from robustq_deploy.export import export_formats, export_model
from robustq_deploy.export.reference import ReferenceSession
from robustq_deploy.models import model_names
from robustq_deploy.runtime import load
from tests.kernels.conftest import calibrated_twin

# small inputs keep each build short; the layer patterns are the architectures' own
SHAPES = {"digits-cnn": (1, 8, 8), "mnist-cnn": (1, 28, 28), "mnist-small": (1, 28, 28), "resnet20": (3, 8, 8),
          "mnist-bnn": (1, 28, 28)}
QUANTS = {"mnist-bnn": QuantConfig("binary", "binary", layers={"conv1": LayerQuantConfig(weight_bits=8)})}
REFUSED = {("mnist-bnn", "qdq"): "binary activations need the 'integer' or 'packed' format"}
# the residual network builds for ~15 s in each form: its integer form runs by default, the rest with -m slow
CASES = [pytest.param(a, f, marks=[pytest.mark.slow] if a == "resnet20" and f != "integer" else [])
         for a in model_names() for f in export_formats()]


def test_every_architecture_has_a_test_shape():
    assert set(model_names()) <= set(SHAPES)


@pytest.fixture(scope="module")
def twins():
    return {a: calibrated_twin(a, SHAPES[a], QUANTS.get(a)) for a in model_names()}


def reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ReferenceSession(model)
    return sess.run(None, {sess.input_names[0]: x})[0]


@pytest.mark.parametrize(("arch", "fmt"), CASES)
def test_exports_and_compiles_bit_exact(twins, arch, fmt, tmp_path):
    if (arch, fmt) in REFUSED:
        with pytest.raises(UnsupportedError, match=REFUSED[(arch, fmt)]):
            export_model(twins[arch], fmt, 21)
        return
    path = tmp_path / f"{arch}.{fmt}.onnx"
    onnx.save(export_model(twins[arch], fmt, 21), str(path))
    art = compile_stage(path, CompileConfig(target="x86"), tmp_path)
    assert art.meta["integer_only"] or fmt == "qdq", art.meta["float_compute"]
    x = np.random.default_rng(0).random((5, *SHAPES[arch]), dtype=np.float32)
    # a QDQ graph compiles with the project's fixed-point rescale: its integer export's bits
    want = reference(export_model(twins[arch], "integer", 21) if fmt == "qdq" else onnx.load(str(path)), x)
    np.testing.assert_array_equal(load(art.file)(x), want)
