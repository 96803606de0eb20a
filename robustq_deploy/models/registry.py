"""The architecture registry and what every architecture's first layer shares.

An architecture is a function ``(quant: QuantConfig, num_classes, input_shape) -> nn.Module``
registered with ``@register_model("name")`` in a module of this package (imported by the
package, so the registry is full once :mod:`robustq_deploy.models` is imported).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from torch import nn

from ..config import QuantConfig
from ..quant import FLOAT_BITS, LayerSpec, layer_spec
from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model architecture", key="model.arch")

PIXEL_SCALE = 1.0 / 255.0


def register_model(name: str):
    """Decorator: register an architecture function as ``name``."""
    return MODELS.register(name)


def model_names() -> list[str]:
    return sorted(MODELS.names())


def first_layer_spec(quant: QuantConfig, name: str) -> tuple[LayerSpec, float | None]:
    """Spec and fixed input scale of a first layer: its input is the uint8 pixel grid
    (8-bit, scale 1/255) whenever the model is quantized, whatever ``act_bits`` says."""
    spec = layer_spec(quant, name)
    if spec.act_bits == FLOAT_BITS:
        return spec, None
    return replace(spec, act_bits=8), PIXEL_SCALE


__all__ = ["MODELS", "PIXEL_SCALE", "first_layer_spec", "model_names", "register_model"]
