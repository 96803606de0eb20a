"""Model architectures, registered by name, and the user's own models.

An architecture is a function ``(quant: QuantConfig, num_classes, input_shape) -> nn.Module``
built from the quantized layers in :mod:`robustq_deploy.quant`, registered with
``@register_model("name")`` (:mod:`.registry`, the :data:`MODELS` registry). Every layer gets its spec from ``[quant]`` and its
``[quant.layers.NAME]`` override, NAME being the module's attribute name (``conv1``, ``fc2``).
The first layer's input quantizer is the model's input quantizer: 8-bit unsigned with the fixed
scale 1/255, the uint8 pixel grid of the deployed input, whatever ``act_bits`` says.

The user's own model (``[model] factory``, :mod:`.factory`, or a float ``nn.Module`` given to the
library API) is an ordinary float model turned into its twin by
:func:`robustq_deploy.quant.convert.quantize` (:func:`twin_of`); the twin's ``source`` attribute
says where it came from, the checkpoint records it, and :func:`rebuild_model` rebuilds the twin
only from a factory or module the caller names.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from torch import nn

from ..config import ModelConfig, QuantConfig
from ..errors import ArtifactError, ConfigError
from ..quant import QUANT_LAYERS, QAdd
from . import bnn, cnn, resnet  # noqa: F401  (register the architectures)
from .registry import MODELS, PIXEL_SCALE, first_layer_spec, model_names, register_model


def build_model(arch: str, quant: QuantConfig, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    model = MODELS.get(arch)(quant, num_classes, tuple(input_shape))
    named = sorted(n for n, m in model.named_modules() if isinstance(m, (*QUANT_LAYERS, QAdd)))
    unknown = sorted(set(quant.layers) - set(named))
    if unknown:
        raise ConfigError(f"quant.layers: {arch} has no layer {', '.join(map(repr, unknown))}; its layers: {', '.join(named)}")
    model.arch = arch
    model.num_classes = num_classes
    model.input_shape = tuple(input_shape)
    return model


def structure_hash(twin: nn.Module) -> str:
    """sha256 of a twin's graph code and state-dict layout (names, shapes, dtypes)."""
    layout = [[k, list(v.shape), str(v.dtype)] for k, v in sorted(twin.state_dict().items())]
    text = json.dumps({"code": getattr(twin, "code", type(twin).__name__), "state": layout}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def twin_of(float_model: nn.Module, quant: QuantConfig, num_classes: int, input_shape: tuple[int, int, int],
            source: dict[str, Any]) -> nn.Module:
    """The quantized twin of a user's float model, checked against the dataset's classes."""
    from ..quant.convert import quantize

    twin = quantize(float_model, quant, tuple(input_shape), arch=type(float_model).__name__)
    if twin.num_classes != num_classes:
        raise ConfigError(f"the model outputs {twin.num_classes} classes, the dataset has {num_classes}")
    twin.source = {**source, "structure": structure_hash(twin)}
    return twin


def object_source(model: nn.Module) -> dict[str, Any]:
    """``source`` record of a float model given as a Python object (no factory to name)."""
    cls = type(model)
    return {"object": f"{cls.__module__}.{cls.__qualname__}"}


def build_model_for(model: ModelConfig, quant: QuantConfig, num_classes: int,
                    input_shape: tuple[int, int, int]) -> nn.Module:
    """The twin a ``[model]`` section describes: a built-in architecture, or the factory's model."""
    if model.factory is None:
        return build_model(model.arch or "", quant, num_classes, input_shape)
    from .factory import build_float, resolve_factory

    ref = resolve_factory(model.factory)
    return twin_of(build_float(ref, model.kwargs), quant, num_classes, input_shape, ref.record(model.kwargs))


_SOURCE_FIELDS = {"factory": str, "attr": str, "kwargs": dict, "sha256": str, "source": str, "structure": str}


def _check_source(source: Any, where: str) -> None:
    """A checkpoint's ``source`` record, strictly typed (it is read from a file)."""
    if not isinstance(source, dict):
        raise ArtifactError(f"{where}: malformed checkpoint metadata (source is not an object)")
    fields = _SOURCE_FIELDS if "factory" in source else {"object": str, "structure": str}
    bad = [k for k, t in fields.items() if not isinstance(source.get(k), t)]
    if bad:
        raise ArtifactError(f"{where}: malformed checkpoint metadata (source {', '.join(bad)} missing or of the "
                            "wrong type)")


def rebuild_model(source: dict[str, Any], named: str | nn.Module | None, kwargs: dict[str, Any] | None,
                  quant: QuantConfig, num_classes: int, input_shape: tuple[int, int, int], where: str) -> nn.Module:
    """The twin of a checkpoint whose model came from a factory or a Python object (``source``),
    from the factory reference or float module the caller names; a missing or different one is
    a one-line ArtifactError. Only a factory named here is imported."""
    from .factory import build_float, check_matches, resolve_factory

    _check_source(source, where)
    if "factory" in source and not isinstance(named, nn.Module):
        if named is None:
            raise ArtifactError(
                f"{where}: the model was built by the factory {source['factory']!r} ({source['source']}, sha256 "
                f"{source['sha256'][:12]}); name it with --model or [model] factory (a checkpoint never imports "
                "code by itself)")
        ref = resolve_factory(named)
        check_matches(source, ref, kwargs, where)
        float_model = build_float(ref, source["kwargs"])
    elif isinstance(named, nn.Module):
        float_model = named
    else:
        raise ArtifactError(f"{where}: the model was given as a Python object ({source.get('object', 'a module')}); "
                            "pass the same float model (model=...) to rebuild it")
    twin = twin_of(float_model, quant, num_classes, input_shape, {k: v for k, v in source.items() if k != "structure"})
    if twin.source["structure"] != source.get("structure"):
        raise ArtifactError(f"{where}: the model named ({type(float_model).__name__}) does not have the layers of the "
                            "checkpoint's model")
    return twin



__all__ = ["MODELS", "PIXEL_SCALE", "build_model", "build_model_for", "first_layer_spec", "model_names",
           "object_source", "rebuild_model", "register_model", "structure_hash", "twin_of"]
