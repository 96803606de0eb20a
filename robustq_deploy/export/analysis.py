"""Static checks of exported graphs: is everything between the input quantizer and the output
dequantizer integer?

The boundary nodes are the QuantizeLinear ops that read a graph input and the DequantizeLinear
ops that write a graph output. Every other node is *inside*; :func:`float_tensors_inside` lists
each inside node that reads a computed float tensor or writes a float tensor (types from ONNX
shape inference, the ``ai.robustq`` schemas included). Float *constants* read inside (the scale
initializers of QLinearConv / QLinearMatMul) are listed separately by :func:`float_constants_inside`.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto

from . import robustq_ops  # noqa: F401  (registers the ai.robustq schemas for shape inference)

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _boundary(g: onnx.GraphProto) -> set[int]:
    inputs = {v.name for v in g.input}
    outputs = {v.name for v in g.output}
    return {i for i, n in enumerate(g.node)
            if (n.op_type == "QuantizeLinear" and n.input[0] in inputs)
            or (n.op_type == "DequantizeLinear" and any(o in outputs for o in n.output))}


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {i.name: i.data_type for i in g.initializer}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        types[v.name] = v.type.tensor_type.elem_type
    return types


def float_tensors_inside(model: onnx.ModelProto) -> list[str]:
    """``"node (op): tensor"`` for every computed float tensor an inside node reads or writes."""
    g = model.graph
    types = _types(model)
    inits = {i.name for i in g.initializer}
    skip = _boundary(g)
    found = []
    for i, n in enumerate(g.node):
        if i in skip:
            continue
        for name in [*(x for x in n.input if x and x not in inits), *n.output]:
            if types.get(name) in FLOAT_TYPES or name not in types:
                found.append(f"{n.name} ({n.op_type}): {name} is {'untyped' if name not in types else 'float'}")
    return found


def float_constants_inside(model: onnx.ModelProto) -> list[str]:
    """``"node (op): initializer"`` for every float initializer an inside node reads."""
    g = model.graph
    floats = {i.name for i in g.initializer if i.data_type in FLOAT_TYPES}
    skip = _boundary(g)
    return [f"{n.name} ({n.op_type}): {x}" for i, n in enumerate(g.node) if i not in skip for x in n.input if x in floats]


__all__ = ["float_constants_inside", "float_tensors_inside"]
