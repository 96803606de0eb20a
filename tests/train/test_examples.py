"""The example run configs of the training methods parse and validate."""
from pathlib import Path

import pytest

from robustq_deploy.validation import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_validates(path):
    cfg = load_config(path)
    assert cfg.train.method and cfg.train.epochs >= 1
