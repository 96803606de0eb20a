"""Where verify gets its test points: the one place that turns a dataset name into images.

:func:`test_points` returns float images in [0, 1] (``[N, C, H, W]``, on the uint8 pixel grid) and
int64 labels. The dataset is ``verify.dataset`` (``--data``) or, for a model with a checkpoint in
its lineage, the dataset it was trained on (with the checkpoint's ``data.test_limit``), or the user's
own data (``--data FILE.npz`` or an image folder, :func:`data_section`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig, RunConfig, from_dict, replace, to_dict
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
                run_cfg: RunConfig | None = None, data_path: str | None = None) -> TestData:
    """The first ``limit`` test points of ``dataset`` or of the user's ``data_path`` (an .npz file
    or an image folder), by default the checkpoint's dataset."""
    from ..checkpoint import load_split

    if dataset is None and data_path is None and run_cfg is None:
        raise ConfigError(f"verify needs test data for a model without a checkpoint: pass --data DATASET "
                          f"({', '.join(dataset_names())}), an .npz file or an image folder")
    if data_path is not None:
        base = run_cfg if run_cfg is not None else RunConfig()
        cfg = replace(base, data=data_section(data_path, base.data))
        _, _, ds = load_split(cfg, "test")
    elif run_cfg is not None and dataset in (None, run_cfg.data.dataset):
        cfg = run_cfg if data_dir is None else replace(run_cfg, **{"data.data_dir": data_dir})
        _, _, ds = load_split(cfg, "test")
    else:
        ds = load_dataset(dataset, "test", data_dir=data_dir)
    if limit is not None:
        ds = ds.take(min(limit, len(ds)))
    return TestData(ds.name, torch.from_numpy(ds.as_float()), torch.from_numpy(ds.labels.astype("int64")),
                    len(ds.classes), ds.input_shape)


def data_section(data: str | Path | DataConfig | None, base: DataConfig) -> DataConfig:
    """``data`` as a ``[data]`` section: a dataset name, an .npz file, an image folder or a DataConfig."""
    if data is None:
        return base
    if isinstance(data, DataConfig):
        return data
    text = str(data)
    if text in dataset_names() and not Path(text).exists():
        return DataConfig(dataset=text, train_limit=base.train_limit, test_limit=base.test_limit)
    p = Path(text).expanduser()
    if p.is_dir():
        return from_dict(DataConfig, {**to_dict(base), "dataset": "folder", "path": str(p), "data_dir": None})
    if p.suffix == ".npz":
        return from_dict(DataConfig, {**to_dict(base), "dataset": "npz", "path": str(p), "data_dir": None,
                                      "size": None, "channels": None})
    raise ConfigError(f"data: {text!r} is neither a dataset ({', '.join(dataset_names())}), an .npz file nor a folder")


__all__ = ["TestData", "data_section", "test_points"]
