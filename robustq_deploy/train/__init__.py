"""Robust quantization-aware training: one loop (:mod:`.loop`), one module per method
(:mod:`.methods`), registered by name (:mod:`.base`)."""
from .base import Method, StepContext, make_method, method_names, register_method, resolve_params
from .loop import accuracy, fit, load_checkpoint, read_checkpoint, save_checkpoint, train_model, train_stage
from .methods import standard  # noqa: F401  (registers the methods)

__all__ = [
    "Method", "StepContext", "make_method", "method_names", "register_method", "resolve_params",
    "accuracy", "fit", "load_checkpoint", "read_checkpoint", "save_checkpoint", "train_model", "train_stage",
]
