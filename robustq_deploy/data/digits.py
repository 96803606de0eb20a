"""scikit-learn's bundled 8x8 handwritten digits: a tiny dataset that needs no files or network.

Useful for fast end-to-end runs and tests. The train/test split is fixed here rather than taken
from scikit-learn so it cannot change with the scikit-learn version.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from robustq_deploy.data.dataset import Dataset
from robustq_deploy.data.registry import register_dataset
from robustq_deploy.errors import DataError

CLASSES = tuple(str(digit) for digit in range(10))
N_EXAMPLES = 1797
N_TRAIN = 1437  # the remaining 360 are the test split
_MAX_VALUE = 16  # sklearn stores pixel intensities as counts 0..16


@register_dataset("digits", uses=())
def load_digits(split: str, data_dir: Path | None, download: bool) -> Dataset:
    """Load a digits split; ``data_dir`` and ``download`` are ignored (data ships with sklearn)."""
    return _load(split)


@lru_cache(maxsize=2)
def _load(split: str) -> Dataset:
    # Imported here: scikit-learn takes about a second to import and only this dataset needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    if bunch.data.shape != (N_EXAMPLES, 64):
        raise DataError(
            f"scikit-learn digits has shape {bunch.data.shape}, expected ({N_EXAMPLES}, 64)"
        )
    images = np.rint(bunch.data * (255 / _MAX_VALUE)).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(N_EXAMPLES)
    index = order[:N_TRAIN] if split == "train" else order[N_TRAIN:]
    return Dataset("digits", split, images[index], labels[index], CLASSES)
