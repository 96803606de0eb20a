"""The training-method protocol and its registry.

A method is a class registered with ``@register_method("name")``. It declares a frozen
``Params`` dataclass for its hyperparameters (read from ``[train.params]`` and validated like
the rest of the config; ``__post_init__`` raises :class:`~robustq_deploy.errors.ConfigError` for
bad values), and implements :meth:`Method.loss`, the objective of one batch.
Optional hooks, in the order the loop calls them:

* :meth:`Method.prepare` (before training: train or load a float teacher, choose per-layer bit
  widths, allocate buffers); may return a different model;
* :meth:`Method.run_config` (the config the trained model is rebuilt from; methods that choose
  settings, such as layer-wise bit widths, return it with their choices so the checkpoint
  rebuilds the same model);
* per epoch :meth:`Method.before_epoch` and :meth:`Method.after_epoch`; per step
  :meth:`Method.loss` then, after ``backward()``, :meth:`Method.after_backward` (input gradients
  of the step are available there);
* :meth:`Method.finish` (after training: hard-quantize, prune, report metrics stored with the
  checkpoint).

A method that keeps state from step to step beyond the model (ODG-Q's replayed perturbations)
returns it from :meth:`Method.state_dict` and takes it back in :meth:`Method.load_state_dict`,
so that a stopped run resumes exactly (:mod:`.resume`); state derived from the epoch number
needs neither.

All methods share the loop in :mod:`.loop`. The model a method receives in :meth:`loss` may be
wrapped in DistributedDataParallel; generate attacks on :func:`.distributed.unwrap` of it (the
helpers in :mod:`.adversary` do).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import RunConfig, TrainConfig, from_dict
from ..registry import Registry


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
    index: torch.Tensor | None = None  # dataset rows of this (process's) batch


@dataclass
class PrepareContext:
    """What a method sees before training: the run, the training split and where to train."""

    run: RunConfig
    x: torch.Tensor
    y: torch.Tensor
    device: torch.device
    progress: bool = True


class Method:
    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    requires_quant: ClassVar[bool] = False  # refuse a float [quant] section

    def __init__(self, cfg: TrainConfig, params: Any):
        self.cfg = cfg
        self.params = params

    def prepare(self, model: nn.Module, ctx: PrepareContext) -> nn.Module:
        return model

    def run_config(self, cfg: RunConfig) -> RunConfig:
        return cfg

    def before_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def after_backward(self, model: nn.Module, ctx: StepContext) -> None:
        pass

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Step-to-step state beyond the model's (tensors and JSON values), saved after each epoch."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned (called after :meth:`prepare`)."""

    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Final transform of the trained model; returns metrics stored with the checkpoint."""
        return {}


METHODS: Registry[type[Method]] = Registry("training method", key="train.method")


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass as ``name``."""
    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.add(name, cls)
    return deco


def method_names() -> list[str]:
    return sorted(METHODS.names())


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def resolve_params(method: str, params: dict[str, Any]) -> Any:
    return from_dict(method_class(method).Params, params, "train.params")


def make_method(cfg: TrainConfig) -> Method:
    return method_class(cfg.method)(cfg, resolve_params(cfg.method, cfg.params))
