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


def assert_within_rounding(got, qdq_model, x) -> None:
    """``got`` (an engine's logits for ``x``) lies within the rounding-deviation bound of the
    reference run of the QDQ ``qdq_model`` (a path or ModelProto), element by element: any
    engine may round a near-tie the other way, nothing more (robustq_deploy.export.reference.deviation)."""
    import numpy as np
    import onnx

    from robustq_deploy.export.reference import ReferenceSession
    from robustq_deploy.export.reference.deviation import rounding_deviation

    model = qdq_model if isinstance(qdq_model, onnx.ModelProto) else onnx.load(str(qdq_model))
    sess = ReferenceSession(model)
    feeds = {sess.input_names[0]: x}
    (ref,) = sess.run(None, feeds)
    (bound,) = rounding_deviation(model, feeds).values()
    excess = np.abs(np.asarray(got, np.float64) - ref) - bound
    assert np.all(excess <= 0), f"{np.count_nonzero(excess > 0)} outputs beyond the rounding bound (worst by {excess.max():g})"
