"""Measurements behind the evaluation validity checks (after AutoAttack's ``checks.py``).

Each function measures one pitfall and returns plain numbers; :mod:`robustq_deploy.verify.validity`
compares them with bounds and turns violations into report flags.
"""
from __future__ import annotations

import torch

from .base import Model
from .pgd import input_grad


def zero_gradient_mask(model: Model, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per point: is the input gradient of the loss exactly zero (masked or saturated)?"""
    _, grad, _ = input_grad(model, x, y, loss)
    return grad.flatten(1).abs().amax(1) == 0


@torch.no_grad()
def repeat_difference(model: Model, x: torch.Tensor) -> float:
    """Largest absolute logit difference between two calls on the same input (0 if deterministic)."""
    return float((model(x) - model(x)).abs().max()) if len(x) else 0.0


@torch.no_grad()
def looks_like_probabilities(logits: torch.Tensor, atol: float = 1e-4) -> bool:
    """Outputs in [0, 1] summing to 1 per row: a softmax layer that flattens the attack loss.

    Outputs on a grid (a quantized softmax: onnxruntime's QLinearSoftmax writes levels of 1/256)
    sum to 1 only within half a grid step per class, which is the tolerance then."""
    if logits.numel() == 0:
        return False
    if not bool(((logits >= 0) & (logits <= 1)).all()):
        return False
    tol = atol
    values = torch.unique(logits.detach().double().flatten())
    if 1 < values.numel() <= 65536:
        step = float((values[1:] - values[:-1]).min())
        levels = (values - values[0]) / step
        if bool(((levels - levels.round()).abs() < 1e-3).all()):  # every value on one grid
            tol = max(atol, 0.5 * step * logits.shape[1])
    return bool(((logits.double().sum(1) - 1).abs() <= tol).all())