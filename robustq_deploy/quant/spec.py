"""Typed quantization spec of one layer, resolved from the run config.

``weight_bits`` is 32 (float), 8, 4, 2, ``"ternary"`` or ``"binary"``; ``act_bits`` (the bits of the
layer's *input* activations) is 32, 8, 4, 2 or ``"binary"``. The model-wide values in
``[quant]`` apply to every layer; ``[quant.layers.NAME]`` overrides them per layer (mixed precision).
``weight_clip`` (per layer) narrows the range of integer weights to a fraction of ``max|W|``
(layer-wise quantization picks it); ``learned_step`` (``[quant] scale_mode = "lsq"``) makes the
integer steps trainable parameters (LSQ). Both default to the plain min-max quantizer.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import BitWidth, QuantConfig

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerSpec:
    weight_bits: BitWidth = 8
    act_bits: BitWidth = 8
    per_channel: bool = True
    weight_clip: float | None = None  # fraction of max|W| kept by integer weights; None: all
    learned_step: bool = False  # LSQ steps for integer weights and observed activations

    @property
    def weight_quantized(self) -> bool:
        return self.weight_bits != FLOAT_BITS

    @property
    def act_quantized(self) -> bool:
        return self.act_bits != FLOAT_BITS


FLOAT_SPEC = LayerSpec(FLOAT_BITS, FLOAT_BITS)


def layer_spec(cfg: QuantConfig, name: str) -> LayerSpec:
    """The spec of layer ``name`` after per-layer overrides."""
    over = cfg.layers.get(name)
    wb = over.weight_bits if over and over.weight_bits is not None else cfg.weight_bits
    ab = over.act_bits if over and over.act_bits is not None else cfg.act_bits
    clip = over.weight_clip if over else None
    return LayerSpec(wb, ab, cfg.granularity == "per_channel", clip, cfg.scale_mode == "lsq")


def weight_storage_bits(bits: BitWidth) -> int:
    """Bits one weight occupies when packed: ternary takes two bit planes, binary one."""
    return {"ternary": 2, "binary": 1}.get(bits, bits)  # type: ignore[arg-type]
