"""Fashion-MNIST (Zalando, MIT): clothing images in MNIST's format, 60k train / 10k test."""

from __future__ import annotations

from pathlib import Path

from robustq_deploy.data.dataset import Dataset
from robustq_deploy.data.idx import IdxDatasetSpec, IdxFile, load_idx_dataset
from robustq_deploy.data.registry import register_dataset

FASHION_MNIST = IdxDatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    url_env="ROBUSTQ_FASHION_MNIST_URL",
    default_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    train=(
        IdxFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        IdxFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ),
    test=(
        IdxFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        IdxFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
)


@register_dataset("fashion-mnist")
def load_fashion_mnist(split: str, data_dir: Path | None, download: bool) -> Dataset:
    """Load a Fashion-MNIST split from the four original idx.gz files (see ``load_dataset``)."""
    return load_idx_dataset(FASHION_MNIST, split, data_dir, download)
