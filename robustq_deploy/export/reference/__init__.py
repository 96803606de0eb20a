"""The numpy integer reference: the project's single definition of how exported graphs compute.

:class:`ReferenceSession` runs an ONNX model (QDQ, integer, QOperator or packed form) with
numpy functions whose integer semantics are fixed here and nowhere else: rounding (half to even
in QuantizeLinear and the QOperator float requantization, half toward +infinity in the
fixed-point requantization of :mod:`robustq_deploy.fixed_point`), saturation to the
storage type, zero points, int32 accumulators with wrap-around, truncating integer ``Div``.
onnxruntime, the TVM builds and the kernels are checked bit for bit against it.

Layout: :mod:`.session` (interpreter, op registry, requantization fusion), :mod:`.intmath`
(exact integer conv / matmul), :mod:`.ops_standard`, :mod:`.ops_quant`, :mod:`.ops_robustq`
(op functions). To support another operator, register a function with ``@reference_op("OpType")``.
"""
from . import ops_quant, ops_robustq, ops_standard  # noqa: F401  (register the op functions)
from .intmath import int_conv2d, int_matmul
from .ops_quant import qlinear_requantize
from .session import ReferenceSession, reference_op, run_reference, supported_ops

__all__ = ["ReferenceSession", "int_conv2d", "int_matmul", "qlinear_requantize", "reference_op", "run_reference",
           "supported_ops"]
