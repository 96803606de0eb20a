"""Quantization core: pure math (:mod:`.primitives`), per-layer specs (:mod:`.spec`) and the
fake-quant modules of the PyTorch twin (:mod:`.modules`)."""
from .modules import ActQuantizer, QAdd, QConv2d, QLinear, QUANT_LAYERS, WeightQuantizer, quant_layers
from .spec import FLOAT_BITS, FLOAT_SPEC, LayerSpec, layer_spec, weight_storage_bits

__all__ = [
    "ActQuantizer", "QAdd", "QConv2d", "QLinear", "QUANT_LAYERS", "WeightQuantizer", "quant_layers",
    "FLOAT_BITS", "FLOAT_SPEC", "LayerSpec", "layer_spec", "weight_storage_bits",
]
