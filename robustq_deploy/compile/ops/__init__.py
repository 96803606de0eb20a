"""The project's converters, one module per op family; importing this package registers them.

``quantize``: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.
``conv``: ConvInteger, QLinearConv.   ``matmul``: MatMulInteger, QLinearMatMul, QGemm.
``add``: QLinearAdd.   ``clip``: Clip (as Relax ops).   ``contrib``: onnxruntime's other com.microsoft QOperator ops.
``fused``: the integer ops the graph rewrites produce.
``robustq``: the ``ai.robustq`` bit-packed ops of the ``packed`` export (and their kernels).
"""
from . import add, clip, contrib, conv, fused, matmul, quantize, robustq  # noqa: F401
