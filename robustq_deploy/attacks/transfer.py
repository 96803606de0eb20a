"""Transfer attack: adversarial examples crafted white-box (PGD) on a source model and replayed
on the target.

``source = "float"`` crafts on the float model (the twin's weights with every quantizer
switched off), ``"twin"`` on the fake-quant twin itself, ``"onnx-twin"`` on the twin built from
the deployed ONNX graph, ``"surrogate"`` on a model the user names (``verify --surrogate``: a float
ONNX file or a checkpoint); ``"auto"`` (the default) picks the surrogate when there is one, else
the float model, else the white-box twin. Replaying float-crafted examples on the
deployed integer module catches models whose quantizers distort gradients: if the float model's
examples fool the deployed module where the twin's own do not, the twin's gradients are suspect.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .base import Attack, register_attack
from .pgd import PGDParams, pgd

SOURCES = ("auto", "float", "twin", "onnx-twin", "surrogate")


@dataclass(frozen=True)
class TransferParams(PGDParams):
    """PGD's settings, run on the ``source`` model instead of the twin."""

    source: str = "auto"


@register_attack("transfer")
class Transfer(Attack):
    Params = TransferParams
    access = "transfer"

    def __init__(self, threat, params):
        if params.source not in SOURCES:
            raise ConfigError(f"verify.attack_params.transfer.source: unknown source {params.source!r}; "
                              f"choose one of {', '.join(SOURCES)}")
        super().__init__(threat, params)

    @property
    def source(self) -> str:
        return self.params.source

    def perturb(self, model, x, y, generator=None):
        """``model`` is the source model (the caller passes the one :attr:`source` names)."""
        p = self.params
        return pgd(model, x, y, self.threat, p.steps, p.step_size, p.random_start, p.restarts, generator, p.loss)
