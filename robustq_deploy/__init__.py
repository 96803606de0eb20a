"""robustq-deploy: train robust quantized models, export integer ONNX, compile with TVM, and
verify adversarial robustness on the deployed artifact.

Library API (:mod:`.api`): :func:`quantize`, ``train``, ``export``, ``compile``, ``verify`` and
:func:`load`. ``robustq_deploy.train`` (``export``, ``compile``, ``verify``) is the stage's
package and, called, the API function of that stage: the package object is given a module
class with ``__call__`` when it is imported, so ``robustq_deploy.train(...)`` works whether or not
``robustq_deploy.train.loop`` was imported first.
"""
import importlib
import sys
import types

__version__ = "0.1.0"
_STAGES = ("train", "export", "compile", "verify")


class _Stage(types.ModuleType):
    """A stage package that, called, runs the stage's library API function (:mod:`.api`)."""

    def __call__(self, *args, **kwargs):
        from . import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        if name in _STAGES and type(value) is types.ModuleType:  # the import system binding the subpackage
            value.__class__ = _Stage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _STAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(path, threads=None, target=None):
    """Runner for a deployed artifact (ONNX file, compiled library, or artifact folder with
    ``target`` picking its compiled library); see :mod:`.runtime`."""
    from .runtime import load as _load

    return _load(path, threads=threads, target=target)


def quantize(model, spec=None, input_shape=None):
    """The quantized twin of a float ``nn.Module`` (:func:`robustq_deploy.quant.convert.quantize`)."""
    from .api import quantize as _quantize

    return _quantize(model, spec, input_shape)


__all__ = ["compile", "export", "load", "quantize", "train", "verify", "__version__"]
