"""Threat model: norm, radius, input range and the deployed input grid."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ThreatModel:
    """``norm`` is "linf" or "l2"; inputs live in ``[lo, hi]``; ``grid`` is the deployed input step
    (1/255 for uint8 pixels), or None for continuous inputs."""

    norm: str = "linf"
    eps: float = 0.1
    lo: float = 0.0
    hi: float = 1.0
    grid: float | None = 1.0 / 255.0

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Nearest point of the eps-ball around ``x`` intersected with the input box."""
        d = x_adv - x
        if self.norm == "linf":
            d = d.clamp(-self.eps, self.eps)
        else:
            n = d.flatten(1).norm(dim=1).clamp(min=1e-12)
            d = d * (self.eps / n).clamp(max=1.0).view(-1, *[1] * (d.ndim - 1))
        return (x + d).clamp(self.lo, self.hi)

    def to_grid(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Round to the deployed input grid, staying inside the L-inf ball (round toward ``x``
        where rounding would leave it), so a scored input is one the device can really receive."""
        if self.grid is None:
            return x_adv
        g = self.grid
        r = torch.round(x_adv / g) * g
        if self.norm == "linf":
            over = (r - x).abs() > self.eps + 1e-6
            toward = torch.where(x_adv > x, torch.floor(x_adv / g), torch.ceil(x_adv / g)) * g
            r = torch.where(over, toward, r)
        return r.clamp(self.lo, self.hi)
