"""Where verify gets its test points: the one place that turns a dataset name into images.

:func:`test_points` returns float images in [0, 1] (``[N, C, H, W]``, on the uint8 pixel grid) and
int64 labels. The dataset is ``verify.dataset`` (``--data``) or, for a model with a checkpoint in
its lineage, the dataset it was trained on (with the checkpoint's ``data.test_limit``). A new
source of data (files of the user's own) plugs in here, behind :func:`test_points`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import RunConfig, replace
from ..data import dataset_names, load_dataset
from ..errors import ConfigError


@dataclass(frozen=True)
class TestData:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    chw: tuple[int, int, int]


def test_points(dataset: str | None, data_dir: str | None, limit: int | None,
                run_cfg: RunConfig | None = None) -> TestData:
    """The first ``limit`` test points of ``dataset`` (default: the checkpoint's dataset)."""
    if dataset is None and run_cfg is None:
        raise ConfigError(f"verify needs test data for a model without a checkpoint: pass --data DATASET "
                          f"({', '.join(dataset_names())})")
    if run_cfg is not None and dataset in (None, run_cfg.data.dataset):
        cfg = run_cfg if data_dir is None else replace(run_cfg, **{"data.data_dir": data_dir})
        ds = load_dataset(cfg.data.dataset, "test", data_dir=cfg.data.data_dir)
        if cfg.data.test_limit is not None:
            ds = ds.take(min(cfg.data.test_limit, len(ds)))
    else:
        ds = load_dataset(dataset, "test", data_dir=data_dir)
    if limit is not None:
        ds = ds.take(min(limit, len(ds)))
    return TestData(ds.name, torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels.astype("int64")),
                    len(ds.classes), ds.input_shape)


__all__ = ["TestData", "test_points"]
