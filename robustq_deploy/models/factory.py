"""Your own model: a factory function, named by the user, that builds an ordinary float PyTorch model.

A factory reference is ``"path/to/file.py:build"`` (a Python file; a relative path is taken from
the current directory) or ``"package.module:build"`` (an importable module); ``build`` may be a
dotted attribute path (``Nets.small``). ``[model] kwargs`` are its keyword arguments. The model it
returns is turned into the quantized twin by :func:`robustq_deploy.quant.convert.quantize`.

A checkpoint records the reference, the keyword arguments and the sha256 of the factory's source
file (:meth:`FactoryRef.record`), never the code: export and verify import only a factory the user
names (``[model] factory`` or ``--model``), after checking that it is the one the checkpoint was
trained with (:func:`check_matches`). So a checkpoint from elsewhere cannot run code on its own.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import ArtifactError, ConfigError


@dataclass(frozen=True)
class FactoryRef:
    """A resolved factory reference (nothing imported yet)."""

    ref: str  # as the user wrote it
    module: str  # a module name, or "" for a file
    file: Path  # the source file
    attr: str  # attribute path of the factory in the module
    sha256: str  # of the source file

    def record(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """What a checkpoint stores about the factory."""
        return {"factory": self.ref, "attr": self.attr, "kwargs": dict(kwargs), "sha256": self.sha256,
                "source": self.file.name}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_factory(ref: str) -> FactoryRef:
    """Find the source file of ``ref`` and hash it; a file reference imports nothing."""
    where, colon, attr = ref.rpartition(":")
    if not colon or not where or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ConfigError(f"model.factory {ref!r}: expected 'path/to/file.py:function' or 'module.path:function'")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.factory {ref!r}: no such file {path}")
        return FactoryRef(ref, "", path.resolve(), attr, _sha256(path))
    try:
        spec = importlib.util.find_spec(where)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"model.factory {ref!r}: cannot find module {where!r} ({exc})") from None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise ConfigError(f"model.factory {ref!r}: cannot find module {where!r} (is it on PYTHONPATH?)")
    return FactoryRef(ref, where, Path(spec.origin).resolve(), attr, _sha256(Path(spec.origin)))


_LOADED: dict[tuple[str, str, str], Any] = {}  # (module, file, sha256) -> module object


def _import(f: FactoryRef):
    key = (f.module, str(f.file), f.sha256)
    if key in _LOADED:
        return _LOADED[key]
    if f.module:
        mod = importlib.import_module(f.module)
    else:
        name = f"robustq_factory_{f.sha256[:16]}"
        spec = importlib.util.spec_from_file_location(name, f.file)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses and pickling look their module up there
        folder = str(f.file.parent)
        sys.path.insert(0, folder)  # the file may import its neighbours
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        finally:
            sys.path.remove(folder)
    _LOADED[key] = mod
    return mod


def load_factory(f: FactoryRef) -> Callable[..., nn.Module]:
    """Import the module of ``f`` and return the factory."""
    try:
        obj = _import(f)
    except Exception as exc:
        raise ConfigError(f"model.factory {f.ref!r}: importing {f.file} raised {type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0]}") from None
    for part in f.attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model.factory {f.ref!r}: {f.file} has no attribute {f.attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.factory {f.ref!r}: {f.attr!r} is not callable")
    return obj


def build_float(f: FactoryRef, kwargs: dict[str, Any]) -> nn.Module:
    """The float model the factory builds with ``kwargs``."""
    fn = load_factory(f)
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ConfigError(f"model.factory {f.ref!r} with kwargs {kwargs}: {type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0]}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory {f.ref!r}: returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check_matches(recorded: dict[str, Any], named: FactoryRef, kwargs: dict[str, Any] | None, where: str) -> None:
    """Refuse (one line) a factory or kwargs other than those the checkpoint was trained with."""
    if named.sha256 != recorded["sha256"] or named.attr != recorded["attr"]:
        raise ArtifactError(
            f"{where}: model factory {named.ref!r} ({named.file.name}, sha256 {named.sha256[:12]}, {named.attr}) is not "
            f"the one the checkpoint was trained with ({recorded['factory']!r}: {recorded['source']}, sha256 "
            f"{recorded['sha256'][:12]}, {recorded['attr']})")
    if kwargs is not None and dict(kwargs) != dict(recorded["kwargs"]):
        raise ArtifactError(f"{where}: model kwargs {dict(kwargs)} differ from the checkpoint's {recorded['kwargs']}")


__all__ = ["FactoryRef", "build_float", "check_matches", "load_factory", "resolve_factory"]
