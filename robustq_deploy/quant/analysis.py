"""How a model's layers respond to input perturbations: what training diagnostics and verify's
report both measure (:func:`error_amplification`), on plain modules and tensors.

For every conv / linear layer ``l`` (its output, before the activation),
``mean_i ||f_l(x_i + delta_i) - f_l(x_i)|| / ||delta_i||``. Quantized layers round small input
changes to whole steps, so their ratios grow with depth faster than a float model's (Lin et al.
2019's "error amplification effect").
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .modules import quant_layers


def capture(model: nn.Module, x: torch.Tensor, what: str) -> dict[str, torch.Tensor]:
    """Inputs (``what="input"``) or outputs of every conv / linear layer for one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, layer in quant_layers(model):
        def hook(_m, inp, out, name=name):
            seen[name] = (inp[0] if what == "input" else out).detach()
        hooks.append(layer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def error_amplification(model: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> list[dict[str, Any]]:
    """Per layer, the mean over examples of ``||f_l(x + delta) - f_l(x)|| / ||delta||``
    (the model in eval mode, restored after; a data-parallel wrapper's module is used; ``x +
    delta`` is clipped to [0, 1] and the actual difference used)."""
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = net.training
    net.eval()
    try:
        x_pert = (x + delta).clamp(0, 1)
        dn = (x_pert - x).flatten(1).norm(dim=1).clamp(min=1e-12)
        clean, pert = capture(net, x, "output"), capture(net, x_pert, "output")
    finally:
        net.train(was_training)
    return [{"layer": name, "ratio": float(((pert[name] - clean[name]).flatten(1).norm(dim=1) / dn).mean())}
            for name in clean]


__all__ = ["capture", "error_amplification"]
