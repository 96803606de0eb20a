"""Threat model: norm, radius, input range and the deployed input grid.

Every attack receives one :class:`ThreatModel` and returns points inside it: within ``eps`` of the
clean input in the threat's norm and inside the input box ``[lo, hi]``. The deployed model only
ever sees inputs on its grid (uint8 pixels, step 1/255), so scored adversarial inputs go through
:meth:`ThreatModel.to_grid`, which rounds to the grid without leaving the ball.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError

NORMS = ("linf", "l2")


def per_point(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-point vector ``[N]`` viewed so it broadcasts over ``[N, ...]``."""
    return v.view(-1, *[1] * (ndim - 1))


@dataclass(frozen=True)
class ThreatModel:
    """``norm`` is "linf" or "l2"; inputs live in ``[lo, hi]``; ``grid`` is the deployed input step
    (1/255 for uint8 pixels), or None for continuous inputs."""

    norm: str = "linf"
    eps: float = 0.1
    lo: float = 0.0
    hi: float = 1.0
    grid: float | None = 1.0 / 255.0

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ConfigError(f"threat norm {self.norm!r} is not supported; choose one of {', '.join(NORMS)}")
        if not self.eps >= 0:
            raise ConfigError(f"threat eps must be >= 0, got {self.eps!r}")
        if not self.lo < self.hi:
            raise ConfigError(f"threat input range [{self.lo}, {self.hi}] is empty")
        if self.grid is not None and not self.grid > 0:
            raise ConfigError(f"threat input grid must be positive, got {self.grid!r}")

    def dist(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-point distance in the threat's norm, shape ``[N]``."""
        d = (x_adv - x).flatten(1)
        return d.abs().amax(dim=1) if self.norm == "linf" else d.norm(dim=1)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Nearest point of the eps-ball around ``x`` intersected with the input box."""
        d = x_adv - x
        if self.norm == "linf":
            d = d.clamp(-self.eps, self.eps)
        else:
            n = d.flatten(1).norm(dim=1).clamp(min=1e-12)
            d = d * per_point((self.eps / n).clamp(max=1.0), d.ndim)
        return (x + d).clamp(self.lo, self.hi)

    def random_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random point of the ball: uniform in the L-inf cube, uniform radius along a Gaussian
        direction for L2 (the start PGD uses)."""
        if self.norm == "linf":
            noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * self.eps
        else:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            n = noise.flatten(1).norm(dim=1).clamp(min=1e-12)
            r = torch.rand(x.shape[0], generator=generator, dtype=x.dtype)
            noise = noise * per_point(r * self.eps / n, x.ndim)
        return self.project(x + noise, x)

    def normalized_step(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of unit norm: ``sign(g)`` for L-inf, ``g / ||g||`` for L2."""
        if self.norm == "linf":
            return grad.sign()
        n = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
        return grad / per_point(n, grad.ndim)

    def to_grid(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Round to the deployed input grid, staying inside the ball (round toward ``x`` where
        rounding to nearest would leave it), so a scored input is one the device can really receive.

        ``x`` itself must lie on the grid (dataset pixels do)."""
        if self.grid is None:
            return x_adv
        g = self.grid
        nearest = torch.round(x_adv / g) * g
        toward = torch.where(x_adv > x, torch.floor(x_adv / g), torch.ceil(x_adv / g)) * g
        if self.norm == "linf":
            over = (nearest - x).abs() > self.eps + 1e-6
        else:  # rounding toward x never lengthens a component, so the whole point falls back
            over = per_point(self.dist(nearest, x) > self.eps + 1e-6, x.ndim).expand_as(x)
        return torch.where(over, toward, nearest).clamp(self.lo, self.hi)
