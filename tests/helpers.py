"""Test helpers shared across the suite."""
from __future__ import annotations

import pytest
import torch

from robustq_deploy.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``robustq ARGS`` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch intra-op thread for a folder of tests that trains small models: on a 2-core machine
    that also runs compilers, one thread is faster than two contended ones. Autouse where a
    conftest imports it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
