"""Per-point attack objectives on logits ``z`` (shape ``[N, K]``) and labels ``y``.

All are maximised by the attacker and return shape ``[N]``:

* ``ce``: cross-entropy.
* ``dlr``: Difference of Logits Ratio (Croce & Hein 2020),
  ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi`` sorted descending;
  invariant to shifting and scaling the logits, so saturated softmax cannot hide the gradient.
* ``margin``: ``max_{i != y} z_i - z_y``, positive exactly when the point is misclassified
  (the Carlini-Wagner and Square Attack objective).
* :func:`targeted_dlr` (not by name: it needs the target class of every point): AutoAttack's
  targeted DLR, ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, maximised by APGD-T.

Add an objective by writing a function and adding it to :data:`LOSSES`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import registry_of


def _other_max(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest logit among the wrong classes."""
    mask = F.one_hot(y, z.shape[1]).bool()
    return z.masked_fill(mask, float("-inf")).amax(dim=1)


def ce_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(z, y, reduction="none")


def margin_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _other_max(z, y) - z.gather(1, y[:, None]).squeeze(1)


def dlr_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if z.shape[1] < 3:
        raise ConfigError(f"the DLR loss needs at least 3 classes, the model has {z.shape[1]}")
    top = z.sort(dim=1, descending=True).values
    return margin_loss(z, y) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr(target: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The targeted DLR objective toward ``target`` (one class per point); needs 4 classes."""
    def loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if z.shape[1] < 4:
            raise ConfigError(f"the targeted DLR loss needs at least 4 classes, the model has {z.shape[1]}")
        top = z.sort(dim=1, descending=True).values
        rows = torch.arange(len(z))
        return -(z[rows, y] - z[rows, target]) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)
    return loss


LOSSES = registry_of({"ce": ce_loss, "dlr": dlr_loss, "margin": margin_loss}, "attack loss")


def get_loss(name: str | Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The objective called ``name``; a callable objective is returned as is."""
    if callable(name):
        return name
    return LOSSES.get(name)
