"""Robust quantization-aware training: one loop (:mod:`.loop`), one module per method
(:mod:`.methods`), registered by name (:mod:`.base`), training adversaries (:mod:`.adversary`),
data-parallel training (:mod:`.distributed`) and error-amplification diagnostics
(:mod:`.diagnostics`). Checkpoint I/O is :mod:`robustq_deploy.checkpoint` (re-exported here)."""
from ..checkpoint import checkpoint_metrics, load_checkpoint, read_checkpoint, save_checkpoint
from .base import Method, PrepareContext, StepContext, make_method, method_names, register_method, resolve_params
from .loop import TrainResult, accuracy, fit, train_model, train_stage
from .methods import standard  # noqa: F401  (registers the methods)

__all__ = [
    "Method", "PrepareContext", "StepContext", "make_method", "method_names", "register_method", "resolve_params",
    "TrainResult", "accuracy", "checkpoint_metrics", "fit", "load_checkpoint", "read_checkpoint", "save_checkpoint",
    "train_model", "train_stage",
]
