"""Progress output when stderr is not a terminal: plain lines, and the tqdm calls the stages make."""
from __future__ import annotations

from robustq_deploy import progress


def test_log_progress_prints_lines_and_accepts_the_bar_calls(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    b = progress.bar(range(3), "attack pgd", unit="batch")  # pytest's stderr is not a terminal
    assert isinstance(b, progress._LogProgress)
    for _ in b:
        b.set_postfix(loss="0.1")
        b.set_postfix_str("onnxruntime")
    b.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("attack pgd: 100% (3/3)") and lines[-1].endswith("batch/s")
    assert len(lines) == 3


def test_disabled_bar_prints_nothing(capsys):
    b = progress.bar(range(2), "quiet", enabled=False)
    assert list(b) == [0, 1]
    b.set_postfix_str("x")
    b.close()
    assert capsys.readouterr().err == ""


def test_slow_units_show_seconds_each():
    assert progress._rate(2.1, 1.0, "batch") == "2.10 batch/s"
    assert progress._rate(1 / 95, 190.0, "unit") == "95 s/unit, 3.2 min so far"
