"""Deployed engines: selection from an artifact's lineage, the input grid, the float view."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from robustq_deploy.errors import ArtifactError
from robustq_deploy.manifest import resolve_input
from robustq_deploy.quant.modules import ActQuantizer, WeightQuantizer
from robustq_deploy.runtime import load
from robustq_deploy.train import read_checkpoint
from robustq_deploy.verify.engines import DeployedClassifier, deployed_engines, float_view


def _names(art, selectors):
    es = deployed_engines(art, selectors, threads=1)
    return [e.name for e in es.engines], es.missing


def test_selectors(deployed):
    lib = resolve_input(deployed / "model.x86.so", kind="compiled")
    onnx_art = resolve_input(deployed / "model.qdq.onnx", kind="onnx")
    assert _names(lib, ("onnxruntime", "tvm")) == (["onnxruntime", "tvm-x86"], {})
    assert _names(lib, ("x86",)) == (["tvm-x86"], {})
    assert _names(onnx_art, ("tvm",)) == (["tvm-x86"], {})  # libraries built from the ONNX file
    assert _names(onnx_art, ("all",)) == (["onnxruntime", "tvm-x86"], {})
    names, missing = _names(lib, ("onnxruntime", "aarch64"))
    assert names == ["onnxruntime"] and "aarch64" in missing
    with pytest.raises(ArtifactError, match="no deployed engine to verify"):
        deployed_engines(lib, ("fpga-sim",))


def _uint8_identity_model(path):
    """uint8 pixels [N,1,2,2] -> float logits = pixels / 255 flattened (4 'classes')."""
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("Flatten", ["xf"], ["flat"]),
         helper.make_node("Mul", ["flat", "s"], ["y"])],
        "u8", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [1 / 255])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_uint8_input_modules_get_pixels(tmp_path):
    _uint8_identity_model(tmp_path / "u8.onnx")
    clf = DeployedClassifier(load(tmp_path / "u8.onnx"), "u8")
    x = torch.tensor([[[[0.0, 0.5], [100 / 255, 1.0]]]])
    out = clf(x)
    np.testing.assert_allclose(out.numpy(), [[0.0, 128 / 255, 100 / 255, 1.0]], atol=1e-7)  # 0.5 -> pixel 128


def test_float_inputs_are_put_on_the_grid(deployed):
    clf = DeployedClassifier(load(deployed / "model.qdq.onnx"), "onnxruntime")
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    on_grid = torch.round(x * 255) / 255
    assert torch.equal(clf(x), clf(on_grid))


def test_float_view_switches_every_quantizer_off(deployed):
    twin, _ = read_checkpoint(deployed / "model.safetensors")
    flt = float_view(twin)
    bits = [m.bits for m in flt.modules() if isinstance(m, (ActQuantizer, WeightQuantizer))]
    assert bits and set(bits) == {32}
    assert {m.bits for m in twin.modules() if isinstance(m, WeightQuantizer)} == {8}  # the twin is untouched
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.equal(flt(x), twin(x))
        assert torch.allclose(flt(x), twin(x), atol=0.5)  # int8 is close to float
