"""Name -> loader registry, so configs and the CLI can refer to datasets by name.

Each dataset module registers its loader with ``@register_dataset("name")``; the package
``__init__`` imports those modules so the registry is full once ``robustq_deploy.data`` is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from robustq_deploy.data.dataset import SPLITS, Dataset
from ..errors import DataError
from ..registry import Registry


class Loader(Protocol):
    """Signature every registered loader implements; ``split`` is already validated."""

    def __call__(self, split: str, data_dir: Path | None, download: bool, **options: Any) -> Dataset: ...


DATASETS: Registry[Loader] = Registry("dataset", key="data.dataset")
_USES: dict[str, tuple[str, ...]] = {}  # the options each dataset reads
# Options a loader may declare; those that default to None count as given when not None.
OPTIONS = ("data_dir", "path", "size", "channels", "test_fraction", "split_seed")
_FLAGS = {"data_dir": "data.data_dir (--data-dir)", "path": "data.path (--data)", "size": "data.size",
          "channels": "data.channels"}


def register_dataset(name: str, uses: tuple[str, ...] = ("data_dir",)) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader`` under ``name``; a duplicate name is a programming error.

    ``uses``: the options the loader reads (:data:`OPTIONS`). ``data_dir`` arrives as the loader's
    second argument; the others as keyword arguments. Giving a dataset an option it does not
    use is an error (it would otherwise be silently ignored)."""
    unknown = set(uses) - set(OPTIONS)
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown options {sorted(unknown)}")

    def decorator(loader: Loader) -> Loader:
        DATASETS.add(name, loader)
        _USES[name] = tuple(uses)
        return loader

    return decorator


def dataset_uses(name: str) -> tuple[str, ...]:
    """The options dataset ``name`` reads."""
    return _USES.get(name, ())


def dataset_names() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return tuple(sorted(DATASETS.names()))


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    **options: Any,
) -> Dataset:
    """Load split ``"train"`` or ``"test"`` of dataset ``name``.

    ``data_dir`` is searched first (either the folder holding per-dataset subfolders or the
    dataset folder itself), then ``$ROBUSTQ_DATA_DIR``, then the per-user cache; with
    ``download=True`` missing files are downloaded into that cache. ``options`` (``path``,
    ``size``, ``channels``, ``test_fraction``, ``split_seed``) go to the datasets that read them
    (``npz``, ``folder``); a ``data_dir`` or an option the dataset does not read is an error.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    loader = DATASETS[name]
    if split not in SPLITS:
        raise DataError(
            f"unknown split {split!r} for dataset {name!r}; use one of: {', '.join(SPLITS)}"
        )
    uses = _USES[name]
    given = {k: v for k, v in options.items() if v is not None}
    unused = [k for k in given if k in _FLAGS and k not in uses]
    if data_dir is not None and "data_dir" not in uses:
        unused.insert(0, "data_dir")
    if unused:
        what = " and ".join(_FLAGS[k] for k in unused)
        reads = ", ".join(_FLAGS.get(k, f"data.{k}") for k in uses if k in _FLAGS) or "no files"
        raise DataError(f"{what}: not used by dataset {name!r} (it reads {reads})")
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    return loader(split, folder, download, **{k: v for k, v in given.items() if k in uses})
