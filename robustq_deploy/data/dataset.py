"""The in-memory dataset type shared by every loader.

Pixels stay uint8 because the deployed integer model consumes a uint8 input grid; float
conversion happens only where a float model needs it (``as_float``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustq_deploy.errors import DataError

SPLITS = ("train", "test")


def _read_only(array: np.ndarray) -> np.ndarray:
    # Loaders cache datasets in memory and hand the same arrays to every caller, so an in-place
    # edit by one caller must fail instead of silently corrupting everyone else's data.
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a labelled image dataset.

    ``images`` is uint8 ``[N, C, H, W]``, ``labels`` is int64 ``[N]`` with values indexing
    ``classes``. Both arrays are read-only views.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r} ({self.split})"
        if self.split not in SPLITS:
            raise DataError(f"{where}: split must be one of {', '.join(SPLITS)}")
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{where}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"with shape {self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != self.images.shape[:1]:
            raise DataError(
                f"{where}: labels must be int64 [{self.images.shape[0]}], got "
                f"{self.labels.dtype} with shape {self.labels.shape}"
            )
        if not isinstance(self.classes, tuple) or not self.classes:
            raise DataError(f"{where}: classes must be a non-empty tuple of names")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"{where}: labels must lie in 0..{len(self.classes) - 1}")
        object.__setattr__(self, "images", _read_only(self.images))
        object.__setattr__(self, "labels", _read_only(self.labels))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, n: int) -> Dataset:
        """The first ``n`` examples (deterministic, no shuffling)."""
        if not 0 <= n <= len(self):
            raise DataError(
                f"dataset {self.name!r} ({self.split}) has {len(self)} examples, cannot take {n}"
            )
        return Dataset(self.name, self.split, self.images[:n], self.labels[:n], self.classes)

    def as_float(self) -> np.ndarray:
        """Images as float32 in [0, 1] (``images / 255``), a new array."""
        return self.images.astype(np.float32) / np.float32(255)
