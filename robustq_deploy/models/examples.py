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

# Example architectures of the kernel benchmarks and tile records, with their input shapes.
EXAMPLE_SHAPES: dict[str, tuple[int, int, int]] = {"mnist-cnn": (1, 28, 28), "resnet20": (3, 32, 32),
                                                   "mnist-bnn": (1, 28, 28)}


def example_twin(arch: str, seed: int = 0):
    """An example architecture's quantized twin (int8; ``mnist-bnn`` binary with an 8-bit first
    layer) with activation ranges calibrated on random images: the shapes are the real ones,
    which is all a kernel's tile choice or latency depends on."""
    import torch

    from . import build_model

    quant = (QuantConfig("binary", "binary", layers={"conv1": LayerQuantConfig(weight_bits=8)})
             if arch == "mnist-bnn" else QuantConfig())
    torch.manual_seed(seed)
    m = build_model(arch, quant, 10, EXAMPLE_SHAPES[arch])
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(16, *EXAMPLE_SHAPES[arch]))
    return m.eval()


__all__ = ["EXAMPLE_MODELS", "EXAMPLE_SHAPES", "example_twin"]
