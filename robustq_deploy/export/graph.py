"""A small deterministic ONNX graph builder used by every export handler."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..dtypes import DTYPES

IR_VERSION = 10


class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs; names are unique and deterministic."""

    def __init__(self, name: str = "robustq"):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.opsets: dict[str, int] = {}
        self.functions: dict[tuple[str, str], onnx.FunctionProto] = {}  # model-local functions
        self._names: set[str] = set()
        self._const_cache: dict[tuple, str] = {}

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def initializer(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        arr = np.asarray(array)
        # ascontiguousarray turns a 0-d array into shape [1]; keep scalars scalar
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr).reshape(arr.shape), name))
        return name

    def const(self, value, dtype) -> str:
        """A shared scalar or small constant initializer (deduplicated by value and dtype)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            self._const_cache[key] = self.initializer(f"c_{arr.dtype.name}", arr)
        return self._const_cache[key]

    def node(self, op: str, inputs: list[str], outputs: list[str] | int = 1, name: str | None = None,
             domain: str = "", **attrs) -> list[str]:
        base = name or op.lower()
        if isinstance(outputs, int):
            outputs = [self.fresh(f"{base}_out") if outputs == 1 else self.fresh(f"{base}_out{i}") for i in range(outputs)]
        else:
            for o in outputs:
                self._names.add(o)
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self.fresh(base), domain=domain or None, **attrs))
        return outputs

    def add_function(self, fn: onnx.FunctionProto, version: int) -> None:
        """Declare a model-local function (once per domain and name) and import its domain."""
        self.functions.setdefault((fn.domain, fn.name), fn)
        self.opsets[fn.domain] = version

    def add_input(self, name: str, elem_type: int, shape: list) -> str:
        self._names.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def add_output(self, name: str, elem_type: int, shape: list) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def build(self, opset: int, producer: str = "robustq-deploy", doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in sorted(self.opsets.items())]
        functions = [self.functions[k] for k in sorted(self.functions)]
        model = helper.make_model(graph, opset_imports=imports, producer_name=producer, doc_string=doc,
                                  functions=functions)
        model.ir_version = IR_VERSION
        return model


ONNX_TYPES = {name: d.onnx for name, d in DTYPES.items()}  # dtype name -> ONNX element type
