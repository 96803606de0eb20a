"""The project's own exports (int8, int4, binary) compile to integer code and reproduce the numpy
integer reference (:mod:`robustq_deploy.export.reference`) bit for bit, on x86 and on aarch64.

* ``integer`` / ``qoperator`` / ``packed`` forms: bit-exact against the reference;
* ``qdq`` form (fused by the QDQ rewrite with the project's fixed-point rescale): bit-exact
  against the reference run of the same checkpoint's ``integer`` export, and within the rounding
  deviation bound of the reference's float QDQ run (the reference computes QDQ layers in float,
  so near-ties may round the other way: :mod:`robustq_deploy.export.reference.deviation`);
* the bit-packed binary layers run on the XNOR/popcount kernel.

Default tests use models trained briefly on the 8x8 digits; the slow test trains on MNIST and
checks 1000 MNIST test images on both targets.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from robustq_deploy.export.reference.deviation import argmax_may_differ, rounding_deviation
from robustq_deploy.runtime import load

from .conftest import export_all, project_config
from .helpers import Compiled, assert_bit_equal, compile_artifact, require_qemu, run_reference

DEFAULT = [("int8", "integer"), ("int8", "qoperator"), ("int8", "qdq"), ("int4", "integer"), ("bnn", "integer"),
           ("bnn", "packed")]


@pytest.fixture(scope="module")
def compiled(project_models):
    cache = {}

    def get(key: str, fmt: str) -> Compiled:
        if (key, fmt) not in cache:
            cache[(key, fmt)] = Compiled(onnx.load(str(project_models[(key, fmt)])), source=f"{key}/{fmt}")
        return cache[(key, fmt)]
    return get


@pytest.mark.parametrize(("key", "fmt"), [c for c in DEFAULT if c[1] != "qdq"])
def test_bit_exact_with_the_reference(compiled, project_models, digits_x, key, fmt):
    c = compiled(key, fmt)
    (got,) = c(digits_x)
    assert_bit_equal(got, run_reference(onnx.load(str(project_models[(key, fmt)])), digits_x))
    assert c.meta["float_compute"] == []


def test_packed_binary_layers_use_xnor_popcount(compiled):
    kernels = compiled("bnn", "packed").meta["implementations"]
    assert {k: n for k, n in kernels.items() if k.startswith("binary")} == {
        "binary_conv2d:xnor-popcount": 1, "binary_gemm:xnor-popcount": 2}
    assert kernels["int_conv2d:generic"] == 1  # the 8-bit first layer


def test_fused_requantization_chains(compiled):
    assert compiled("int8", "integer").meta["rewrites"]["requant_chains"] == 3


def test_qdq_runs_as_the_integer_form(compiled, project_models, digits_x):
    c = compiled("int8", "qdq")
    assert c.meta["requant"] == "fixed-point" and c.meta["float_compute"] == []
    assert len(c.meta["rewrites"]["qdq"]["fused"]) == 4 and c.meta["rewrites"]["qdq"]["float_layers"] == []
    (got,) = c(digits_x)
    # Same checkpoint, integer export, numpy reference: identical bits.
    assert_bit_equal(got, run_reference(onnx.load(str(project_models[("int8", "integer")])), digits_x))
    # The reference runs the QDQ graph in float: where a rounding is a near-tie the fixed-point
    # module may land one level away, and that propagates. Every logit must lie within the bound
    # derived from the reference run's own near-ties, and predictions agree wherever that bound
    # cannot change the winner.
    qdq = onnx.load(str(project_models[("int8", "qdq")]))
    ref = run_reference(qdq, digits_x)
    (bound,) = rounding_deviation(qdq, {"input": digits_x}).values()
    assert np.all(np.abs(got - ref) <= bound)
    settled = ~argmax_may_differ(ref, bound)
    assert settled.mean() > 0.8 and np.array_equal(got.argmax(1)[settled], ref.argmax(1)[settled])


def _both_targets(path, out, x):
    libs = {t: compile_artifact(path, t, out / t) for t in ("x86", "aarch64")}
    return {t: load(lib)(x) for t, lib in libs.items()}


@pytest.mark.qemu
@pytest.mark.parametrize(("key", "fmt"), [("int8", "integer"), ("int4", "integer"), ("bnn", "packed")])
def test_aarch64_bit_identical_to_x86_and_reference(compiled, project_models, digits_x, tmp_path, key, fmt):
    require_qemu()
    x = digits_x[:100]
    path = project_models[(key, fmt)]
    lib = compile_artifact(path, "aarch64", tmp_path)
    got = load(lib)(x)
    assert_bit_equal(got, compiled(key, fmt)(x)[0])
    assert_bit_equal(got, run_reference(onnx.load(str(path)), x))


@pytest.mark.slow
@pytest.mark.parametrize("key", ["int8", "int4", "bnn"])
def test_mnist_1000_images_both_targets(tmp_path_factory, mnist_x, key):
    require_qemu()
    root = tmp_path_factory.mktemp(f"mnist-{key}")
    paths = export_all(root, project_config(key, dataset="mnist", epochs=1, train_limit=6000), ("integer", "packed"))
    for fmt, path in paths.items():
        outs = _both_targets(path, root / f"out-{fmt}", mnist_x)
        want = run_reference(onnx.load(str(path)), mnist_x)
        assert want.shape == (1000, 10)
        assert_bit_equal(outs["x86"], want)
        assert_bit_equal(outs["aarch64"], want)
