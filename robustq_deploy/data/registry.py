"""Name -> loader registry, so configs and the CLI can refer to datasets by name.

Each dataset module registers its loader with ``@register_dataset("name")``; the package
``__init__`` imports those modules so the registry is full once ``robustq_deploy.data`` is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from robustq_deploy.data.dataset import SPLITS, Dataset
from robustq_deploy.errors import DataError


class Loader(Protocol):
    """Signature every registered loader implements; ``split`` is already validated."""

    def __call__(self, split: str, data_dir: Path | None, download: bool) -> Dataset: ...


_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader`` under ``name``; a duplicate name is a programming error."""

    def decorator(loader: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"dataset {name!r} is already registered")
        _LOADERS[name] = loader
        return loader

    return decorator


def dataset_names() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return tuple(sorted(_LOADERS))


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Dataset:
    """Load split ``"train"`` or ``"test"`` of dataset ``name``.

    ``data_dir`` is searched first (either the folder holding per-dataset subfolders or the
    dataset folder itself), then ``$ROBUSTQ_DATA_DIR``, then the per-user cache; with
    ``download=True`` missing files are downloaded into that cache.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    if split not in SPLITS:
        raise DataError(
            f"unknown split {split!r} for dataset {name!r}; use one of: {', '.join(SPLITS)}"
        )
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    return loader(split, folder, download)
