"""Graphs the twin tests interpret: the project's trained digits models in every export form
(the export tests' fixtures: int8, int4, ternary, bnn) and models quantized by onnxruntime's own
tool (the compiler tests' fixtures: a float CNN trained briefly on MNIST, ``quantize_static``
QOperator and QDQ, ``quantize_dynamic``)."""
from tests.compile.conftest import mnist_x, ort_models  # noqa: F401  (shared session fixtures)
from tests.export.conftest import checkpoints, digits_data, models  # noqa: F401
from tests.helpers import one_torch_thread  # noqa: F401  (autouse for this folder)
