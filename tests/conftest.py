"""Shared fixtures. Real datasets are found through $ROBUSTQ_DATA_DIR (default ../shared/data)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROBUSTQ_DATA_DIR", str((REPO.parent / "shared" / "data").resolve()))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Folder holding the verified MNIST and Fashion-MNIST idx.gz files."""
    return Path(os.environ["ROBUSTQ_DATA_DIR"])


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """The shared trained models (:mod:`tests.zoo`), each trained on first use."""
    from tests.zoo import Zoo

    return Zoo(tmp_path_factory.mktemp("zoo"))
