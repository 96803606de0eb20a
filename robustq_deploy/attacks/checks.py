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
    """Outputs in [0, 1] summing to 1 per row: a softmax layer that flattens the attack loss."""
    if logits.numel() == 0:
        return False
    in_range = bool(((logits >= 0) & (logits <= 1)).all())
    return in_range and bool(((logits.sum(1) - 1).abs() <= atol).all())
