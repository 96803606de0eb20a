"""The training-method protocol and its registry.

A method is a class registered with ``@register_method("name")``. It declares a frozen
``Params`` dataclass for its hyperparameters (read from ``[train.params]`` and validated like
the rest of the config), and implements :meth:`Method.loss`, the objective of one batch.
Optional hooks: :meth:`Method.prepare` (before training: pick bit widths, load a float teacher),
:meth:`Method.after_epoch` and :meth:`Method.finish` (after training: hard-quantize, report
sparsity). All methods share the loop in :mod:`.loop`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import TrainConfig, from_dict
from ..errors import ConfigError


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass
class StepContext:
    """What a method sees of the loop at one step."""

    epoch: int
    step: int
    eps: float  # training eps after warm-up
    generator: torch.Generator


class Method:
    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    requires_quant: ClassVar[bool] = False  # refuse a float [quant] section

    def __init__(self, cfg: TrainConfig, params: Any):
        self.cfg = cfg
        self.params = params

    def prepare(self, model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor) -> nn.Module:
        return model

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Final transform of the trained model; returns metrics stored with the checkpoint."""
        return {}


_METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        _METHODS[name] = cls
        return cls
    return deco


def method_names() -> list[str]:
    return sorted(_METHODS)


def resolve_params(method: str, params: dict[str, Any]) -> Any:
    if method not in _METHODS:
        raise ConfigError(f"train.method: unknown method {method!r}; choose one of {', '.join(method_names())}")
    return from_dict(_METHODS[method].Params, params, "train.params")


def make_method(cfg: TrainConfig) -> Method:
    return _METHODS[cfg.method](cfg, resolve_params(cfg.method, cfg.params))
