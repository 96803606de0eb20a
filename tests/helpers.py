"""Test helpers shared across the suite."""
from __future__ import annotations

import pytest

from robustq_deploy.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``robustq ARGS`` in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err
