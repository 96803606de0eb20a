"""Differentiable twins of deployed ONNX graphs, for white-box attacks on models this tool did
not train.

:class:`GraphTwin` (:mod:`.graph`) interprets a QDQ, QOperator (with onnxruntime's
``com.microsoft`` QLinear* ops), integer or packed (``ai.robustq``) graph, or a float graph, in
PyTorch: the forward pass is the numpy reference's (:mod:`robustq_deploy.export.reference`), the
backward pass straight-through at roundings and clamp-aware at saturations. :mod:`.inputs`
reads the model's input layout and scale.

Layout: :mod:`.values` (exact values with surrogate gradients), :mod:`.graph` (interpreter),
:mod:`.ops` (the op table), :mod:`.ops_standard`, :mod:`.ops_quant`, :mod:`.ops_contrib`,
:mod:`.ops_robustq`.
"""
from . import ops_contrib, ops_quant, ops_robustq, ops_standard  # noqa: F401  (register the ops)
from .graph import GraphTwin, graph_twin, load_model
from .ops import twin_op, twin_ops
from .inputs import InputSpec, input_spec

__all__ = ["GraphTwin", "InputSpec", "graph_twin", "input_spec", "load_model", "twin_op", "twin_ops"]
