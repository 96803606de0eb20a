"""An interrupted verify resumes from its state file and gives the same report as an
uninterrupted run (timings aside)."""
import json

import pytest

from robustq_deploy.verify import robustness, verify_stage
from robustq_deploy.verify.state import STATE_NAME

from .conftest import verify_config

CFG = dict(attacks=["pgd", "square"], eps_sweep=[0.2], limit=64, batch_size=16,
           attack_params={"square": {"queries": 40}})


def _comparable(out):
    report = json.loads((out / "report.json").read_text())
    report.pop("timing")
    return report


def test_interrupted_run_resumes_to_the_same_result(deployed, tmp_path, monkeypatch):
    cfg = verify_config(**CFG)
    lib = deployed / "model.x86.so"
    real = robustness.Evaluation.main_unit
    calls = []

    def interrupted(self, unit, start):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(unit)
        return real(self, unit, start)

    monkeypatch.setattr(robustness.Evaluation, "main_unit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        verify_stage(lib, cfg, tmp_path / "a", progress=False)
    assert (tmp_path / "a" / STATE_NAME).exists() and not (tmp_path / "a" / "report.json").exists()

    resumed = []
    monkeypatch.setattr(robustness.Evaluation, "main_unit", lambda self, unit, start: resumed.append(unit) or real(self, unit, start))
    verify_stage(lib, cfg, tmp_path / "a", progress=False)
    assert calls == ["main/b0", "main/b1"] and resumed == ["main/b2", "main/b3"]  # finished units are not redone
    assert not (tmp_path / "a" / STATE_NAME).exists()

    monkeypatch.setattr(robustness.Evaluation, "main_unit", real)
    verify_stage(lib, cfg, tmp_path / "b", progress=False)
    assert _comparable(tmp_path / "a") == _comparable(tmp_path / "b")


def test_state_of_another_configuration_is_not_reused(deployed, tmp_path, monkeypatch):
    lib = deployed / "model.x86.so"
    real = robustness.Evaluation.main_unit

    def stop(self, unit, start):
        if unit == "main/b1":
            raise KeyboardInterrupt
        return real(self, unit, start)

    monkeypatch.setattr(robustness.Evaluation, "main_unit", stop)
    with pytest.raises(KeyboardInterrupt):
        verify_stage(lib, verify_config(**CFG), tmp_path, progress=False)
    monkeypatch.setattr(robustness.Evaluation, "main_unit", real)
    verify_stage(lib, verify_config(**{**CFG, "eps": 0.15}), tmp_path, progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["threat"]["eps"] == 0.15 and report["n"] == 64
