"""Datasets for training, attacking and verifying models, as uint8 [N, C, H, W] arrays.

Public API: :class:`Dataset`, :func:`load_dataset`, :func:`dataset_names` and the
:func:`register_dataset` decorator. Available datasets: ``digits`` (bundled with scikit-learn),
``mnist``, ``fashion-mnist`` and ``cifar10`` (files found under ``data_dir``,
``$ROBUSTQ_DATA_DIR`` or the per-user cache, downloaded there on demand), and the user's own
images: ``npz`` (arrays in one file) and ``folder`` (one subfolder per class), see :mod:`.own`.
"""

# The dataset modules are imported for their side effect of registering their loaders.
from robustq_deploy.data import cifar10, digits, fashion_mnist, mnist, own  # noqa: F401
from robustq_deploy.data.dataset import Dataset
from robustq_deploy.data.registry import dataset_names, dataset_uses, load_dataset, register_dataset

__all__ = ["Dataset", "dataset_names", "dataset_uses", "load_dataset", "register_dataset"]
