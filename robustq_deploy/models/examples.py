"""The project's reference quantized MNIST models: architecture and quantization per bit width.

Benchmarks (``bench/export_parity.py``, ``bench/fpga.py``) and tests train these to measure
export, compile and accelerator parity on the same four models. ``bnn`` keeps its first layer at
8-bit weights (the real-valued pixels), as binary networks usually do.
"""
from __future__ import annotations

from ..config import LayerQuantConfig, QuantConfig

EXAMPLE_MODELS: dict[str, tuple[str, QuantConfig]] = {
    "int8": ("mnist-cnn", QuantConfig(weight_bits=8, act_bits=8)),
    "int4": ("mnist-cnn", QuantConfig(weight_bits=4, act_bits=4)),
    "ternary": ("mnist-cnn", QuantConfig(weight_bits="ternary", act_bits=8)),
    "bnn": ("mnist-bnn", QuantConfig(weight_bits="binary", act_bits="binary",
                                     layers={"conv1": LayerQuantConfig(weight_bits=8)})),
}

__all__ = ["EXAMPLE_MODELS"]
