"""Starting a quantized model from a trained float one (LWQ's teacher, Binary-Relax's base).

Only the parameters (weights, biases) are copied: the quantized model keeps its own quantizer
state. A float model's input quantizers are identities with scale 1 that never observed
anything; copying them would put the quantized model's pixel input on a grid of step 1 (every
pixel rounded to 0 or 1) and leave its activation scales unobserved. The activation scales are
then observed on calibration examples (:func:`calibrate_activations`), which makes the result a
working post-training-quantized model before any fine-tuning.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..quant import quant_layers

_OWN = ("w_q.step", "in_q.scale")  # learned quantizer steps: the quantized model's own


def load_float_weights(model: nn.Module, source: nn.Module, key: str) -> None:
    """Copy ``source``'s weights and biases into ``model`` (same architecture); ``key`` names the
    config entry in the one-line error when they do not fit."""
    theirs = dict(source.named_parameters())
    own = {k: v for k, v in model.named_parameters() if not k.endswith(_OWN)}
    extra = [k for k in theirs if k not in own and not k.endswith(_OWN)]
    misfit = [k for k, v in own.items() if k not in theirs or theirs[k].shape != v.shape]
    if extra or misfit:
        raise ConfigError(f"{key}: weights do not fit the model ({', '.join((misfit + extra)[:3])})")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(theirs[k])
    for _, layer in quant_layers(model):
        if layer.w_q.learned:
            layer.w_q.init_step(layer.weight)


@torch.no_grad()
def calibrate_activations(model: nn.Module, x: torch.Tensor, batch: int = 128) -> None:
    """Observe the activation scales on ``x``: training-mode forward passes without gradients
    (the weights do not change)."""
    was_training = model.training
    model.train()
    try:
        for i in range(0, len(x), batch):
            model(x[i:i + batch])
    finally:
        model.train(was_training)
