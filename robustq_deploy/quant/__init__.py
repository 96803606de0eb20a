"""Quantization core: pure math (:mod:`.primitives`), per-layer specs (:mod:`.spec`), the
fake-quant modules of the PyTorch twin (:mod:`.modules`) and the conversion of an ordinary
float model into that twin (:mod:`.convert`, imported on use: it needs torch.fx)."""
from .modules import (ActQuantizer, QAdd, QAvgPool2d, QConcat, QConv2d, QConvBn2d, QLinear, QUANT_LAYERS,
                      WeightQuantizer, quant_layers)
from .spec import FLOAT_BITS, FLOAT_SPEC, LayerSpec, layer_spec, weight_storage_bits

__all__ = [
    "ActQuantizer", "QAdd", "QAvgPool2d", "QConcat", "QConv2d", "QConvBn2d", "QLinear", "QUANT_LAYERS", "WeightQuantizer", "quant_layers",
    "FLOAT_BITS", "FLOAT_SPEC", "LayerSpec", "layer_spec", "weight_storage_bits",
]
