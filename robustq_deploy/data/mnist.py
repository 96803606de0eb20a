"""MNIST handwritten digits (LeCun & Cortes, CC BY-SA 3.0): 60k train / 10k test, 1x28x28."""

from __future__ import annotations

from pathlib import Path

from robustq_deploy.data.dataset import Dataset
from robustq_deploy.data.idx import IdxDatasetSpec, IdxFile, load_idx_dataset
from robustq_deploy.data.registry import register_dataset

MNIST = IdxDatasetSpec(
    name="mnist",
    title="MNIST",
    classes=tuple(str(digit) for digit in range(10)),
    url_env="ROBUSTQ_MNIST_URL",
    # The original yann.lecun.com host is unreliable; this is the mirror torchvision uses.
    default_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    train=(
        IdxFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        IdxFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ),
    test=(
        IdxFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        IdxFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
)


@register_dataset("mnist")
def load_mnist(split: str, data_dir: Path | None, download: bool) -> Dataset:
    """Load an MNIST split from the four original idx.gz files (see ``load_dataset``)."""
    return load_idx_dataset(MNIST, split, data_dir, download)
