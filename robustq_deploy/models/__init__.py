"""Model architectures, registered by name.

An architecture is a function ``(quant: QuantConfig, num_classes, input_shape) -> nn.Module``
built from the quantized layers in :mod:`robustq_deploy.quant`, registered with
``@register_model("name")``. Every layer gets its spec from ``[quant]`` and its
``[quant.layers.NAME]`` override, NAME being the module's attribute name (``conv1``, ``fc2``).
The first layer's input quantizer is the model's input quantizer: 8-bit unsigned with the fixed
scale 1/255, the uint8 pixel grid of the deployed input, whatever ``act_bits`` says.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from torch import nn

from ..config import QuantConfig
from ..errors import ConfigError
from ..quant import FLOAT_BITS, QUANT_LAYERS, LayerSpec, QAdd, layer_spec

_MODELS: dict[str, Callable[..., nn.Module]] = {}

PIXEL_SCALE = 1.0 / 255.0


def first_layer_spec(quant: QuantConfig, name: str) -> tuple[LayerSpec, float | None]:
    """Spec and fixed input scale of a first layer: its input is the uint8 pixel grid
    (8-bit, scale 1/255) whenever the model is quantized, whatever ``act_bits`` says."""
    spec = layer_spec(quant, name)
    if spec.act_bits == FLOAT_BITS:
        return spec, None
    return replace(spec, act_bits=8), PIXEL_SCALE


def register_model(name: str):
    def deco(fn):
        _MODELS[name] = fn
        return fn
    return deco


def model_names() -> list[str]:
    return sorted(_MODELS)


def build_model(arch: str, quant: QuantConfig, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    if arch not in _MODELS:
        raise ConfigError(f"unknown model architecture {arch!r}; known: {', '.join(model_names())}")
    model = _MODELS[arch](quant, num_classes, tuple(input_shape))
    named = sorted(n for n, m in model.named_modules() if isinstance(m, (*QUANT_LAYERS, QAdd)))
    unknown = sorted(set(quant.layers) - set(named))
    if unknown:
        raise ConfigError(f"quant.layers: {arch} has no layer {', '.join(map(repr, unknown))}; its layers: {', '.join(named)}")
    model.arch = arch
    model.num_classes = num_classes
    model.input_shape = tuple(input_shape)
    return model


from . import bnn, cnn, resnet  # noqa: E402,F401  (registers the architectures)
