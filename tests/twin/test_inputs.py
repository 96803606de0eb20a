"""A model's input as the twin and the engines feed it: layout, element type and pixel scale read
from the graph, checked against a dataset's image shape with a one-line error."""
import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from robustq_deploy.errors import InputError, UnsupportedError
from robustq_deploy.twin import GraphTwin, input_spec


def _model(shape, elem=TensorProto.FLOAT, quant_scale=None):
    """input -> [QuantizeLinear -> DequantizeLinear] -> Flatten -> logits (identity weights)."""
    nodes, inits, cur = [], [], "input"
    if quant_scale is not None:
        inits += [numpy_helper.from_array(np.array(quant_scale, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.uint8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        cur = "dq"
    if elem == TensorProto.UINT8:
        nodes.append(helper.make_node("Cast", [cur], ["f"], to=TensorProto.FLOAT))
        cur = "f"
    nodes.append(helper.make_node("Flatten", [cur], ["logits"], axis=1))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", elem, ["N", *shape])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", int(np.prod(shape))])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("shape,layout", [((1, 8, 8), "NCHW"), ((8, 8, 1), "NHWC"), ((8, 8), "NHW"), ((64,), "NF"),
                                          ((3, 8, 8), "NCHW"), ((8, 8, 3), "NHWC")])
def test_layouts(shape, layout):
    spec = input_spec(_model(shape))
    assert spec.layout == layout and spec.dtype == "float32"
    c = 3 if 3 in shape else 1
    spec.check((c, 8, 8), "data")
    x = torch.rand(2, c, 8, 8)
    twin = GraphTwin(_model(shape), spec)
    out = twin(x)
    assert out.shape == (2, c * 64)
    # the engines' feed is the same arrangement on the pixel grid
    assert np.allclose(spec.feed(x).reshape(2, -1), np.rint(spec.arrange(x).reshape(2, -1).numpy() * 255) / 255)


def test_pixel_scale_and_uint8_inputs():
    assert input_spec(_model((1, 8, 8), quant_scale=1 / 255)).pixel_scale == pytest.approx(1 / 255)
    assert input_spec(_model((1, 8, 8), quant_scale=1.0)).pixel_scale == 1.0  # the model takes [0, 255]
    assert input_spec(_model((1, 8, 8)), "pixels").pixel_scale == 1.0
    spec = input_spec(_model((1, 8, 8), elem=TensorProto.UINT8))
    assert spec.dtype == "uint8" and spec.range_name == "uint8 pixels"
    x = torch.rand(3, 1, 8, 8)
    assert spec.feed(x).dtype == np.uint8
    xt = x.clone().requires_grad_(True)
    out = GraphTwin(_model((1, 8, 8), elem=TensorProto.UINT8), spec)(xt)
    assert torch.equal(out, torch.round(x * 255).reshape(3, -1))  # exact pixels forward
    out.sum().backward()
    assert torch.allclose(xt.grad, torch.full_like(x, 255.0))  # straight through the rounding


def test_mismatched_data_is_one_line():
    with pytest.raises(InputError) as exc:
        input_spec(_model((1, 28, 28))).check((1, 8, 8), "digits")
    assert str(exc.value) == "digits images are 1x8x8 (CxHxW) but the model's input 'input' is NCHW [N,1,28,28]"
    g = _model((1, 8, 8))
    g.graph.input[0].type.tensor_type.elem_type = TensorProto.INT32
    with pytest.raises(UnsupportedError, match="an image input is float32 or uint8"):
        input_spec(g)


def test_unsupported_ops_are_all_named():
    g = _model((1, 8, 8))
    g.graph.node.extend([helper.make_node("Frobnicate", ["logits"], ["a"]),
                         helper.make_node("Gelu", ["a"], ["b"], domain="com.microsoft")])
    with pytest.raises(UnsupportedError) as exc:
        GraphTwin(g)
    assert str(exc.value) == "the ONNX twin has no rule for: Frobnicate, com.microsoft::Gelu"
