"""Models quantized by onnxruntime's own tool compile to integer code and match onnxruntime bit
for bit: ``quantize_static`` (QOperator: QLinearConv + com.microsoft QGemm; QDQ: fused by the
QDQ rewrite with onnxruntime's float rescale) and ``quantize_dynamic`` (DynamicQuantizeLinear +
ConvInteger / MatMulInteger). Default tests use a CNN trained briefly and 200 test images; the
slow test uses a longer-trained one and 1000 images, on x86 and aarch64 (qemu)."""
from __future__ import annotations

import onnx
import pytest

from robustq_deploy.runtime import load

from . import ort_models as ortq
from .helpers import Compiled, assert_bit_equal, compile_artifact, copy_model, require_qemu

KINDS = ("qoperator", "qdq", "dynamic")


@pytest.mark.parametrize("kind", KINDS)
def test_matches_onnxruntime_bit_for_bit(ort_models, mnist_x, kind):
    model = onnx.load(str(ort_models[kind]))
    compiled = Compiled(model, source=kind)
    x = mnist_x[:200]
    (got,) = compiled(x)
    assert_bit_equal(got, load(ort_models[kind])(x))
    assert compiled.meta["float_compute"] == [], "every conv / matmul must be integer code"
    if kind == "qdq":  # onnxruntime's QDQ graph: every layer fused, the pool/flatten chains integer
        qdq = compiled.meta["rewrites"]["qdq"]
        assert qdq["float_layers"] == [] and len(qdq["fused"]) == 4 and len(qdq["integer_chains"]) == 3
        assert compiled.meta["requant"] == "float"


@pytest.mark.parametrize("form", sorted(ortq.DEPTHWISE_FORMS))
def test_depthwise_and_rescale_fused_in_the_kernels(tmp_path, mnist_x, form):
    """``robustq compile`` (x86, its kernel library) on an onnxruntime-quantized graph with ReLU6
    and a stride-2 depthwise convolution, in each form onnxruntime writes (QDQ / QOperator,
    per-channel / per-tensor with ``reduce_range``, uint8 / symmetric int8 activations): every
    conv runs one kernel with onnxruntime's float rescale in its epilogue
    (``int_conv2d_requant``, depthwise included) and the classifier the integer dense kernel, bit
    for bit onnxruntime. Between the kernels activations stay channels last: the transposes the
    kernels are wrapped in cancel across the residual add (float in QDQ, QLinearAdd in
    QOperator); the first kernel gathers the NCHW graph input itself, and the one transpose left
    is where the activations leave the last kernel's spatial mean."""
    from robustq_deploy.compile import CompileOptions, compile_model, compile_stage, prepare
    from robustq_deploy.config import CompileConfig

    path = ortq.depthwise_qdq(tmp_path, form=form)
    art = compile_stage(path, CompileConfig(target="x86"), tmp_path / "out")
    impls = art.meta["implementations"]
    assert impls.get("int_conv2d_requant:tiled") == 4, impls
    mod, _, _ = compile_model(prepare(onnx.load(str(path))), CompileOptions.of("x86"))
    assert str(mod["main"]).count("R.permute_dims(") == 1, mod["main"]
    assert art.meta["layout"] == {"between_kernels": "NHWC", "transposes": ["Nx1x1x24 -> axes [0, 3, 1, 2]"]}
    assert impls.get("int_matmul:tiled") == 1, impls  # the classifier: Gemm transB, a transposed constant
    convs = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "QLinearConv")]
    assert len(convs) == 4 and all(art.meta["layers"][c] == "int_conv2d_requant:tiled" for c in convs), art.meta["layers"]
    ours, ort = load(art.file), load(path)
    for x in (mnist_x[:1], mnist_x[:37]):
        assert_bit_equal(ours(x), ort(x))


def test_classifier_with_softmax_matches_onnxruntime(ort_models, mnist_x, tmp_path):
    """A classifier ending in Softmax, quantized in QOperator form: the head is com.microsoft
    QLinearSoftmax, and the compiled module's probabilities equal onnxruntime's bit for bit."""
    path = ortq.with_softmax_qoperator(ort_models["qoperator"].parent / "float.onnx", tmp_path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QLinearSoftmax" in ops, ops
    compiled = Compiled(onnx.load(str(path)), source="qoperator-softmax")
    x = mnist_x[:200]
    (got,) = compiled(x)
    assert_bit_equal(got, load(path)(x))
    assert compiled.meta["float_compute"] == []


def test_qoperator_graph_uses_the_contrib_ops(ort_models):
    ops = {(n.domain, n.op_type) for n in onnx.load(str(ort_models["qoperator"])).graph.node}
    assert ("com.microsoft", "QGemm") in ops and ("", "QLinearConv") in ops


@pytest.mark.qemu
@pytest.mark.parametrize("kind", ["qdq", "qoperator-softmax"])
def test_aarch64_matches_onnxruntime(ort_models, mnist_x, tmp_path, kind):
    require_qemu()
    x = mnist_x[:100]
    if kind == "qdq":
        path = copy_model(ort_models["qdq"], tmp_path)
    else:  # QLinearSoftmax's table, float32 row sums and double rescale on aarch64
        path = ortq.with_softmax_qoperator(ort_models["qoperator"].parent / "float.onnx", tmp_path)
    lib = compile_artifact(path, "aarch64", tmp_path / "out")
    assert_bit_equal(load(lib)(x), load(path)(x))


@pytest.mark.slow
def test_1000_mnist_images_bit_exact_on_both_targets(tmp_path_factory, mnist_x):
    require_qemu()
    root = tmp_path_factory.mktemp("ort-slow")
    models = ortq.quantize_all(ortq.train_float_cnn(root, n_train=6000), root, n_calib=200)
    for kind in KINDS:
        want = load(models[kind])(mnist_x)
        assert want.shape == (1000, 10)
        for target in ("x86", "aarch64"):
            lib = compile_artifact(models[kind], target, root / f"out-{kind}-{target}")
            assert_bit_equal(load(lib)(mnist_x), want)
