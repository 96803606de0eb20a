"""Resumable training: a run stopped after an epoch and started again ends bit-identical."""
import pytest
import torch

from robustq_deploy.config import replace
from robustq_deploy.errors import ArtifactError
from robustq_deploy.train import train_model
from robustq_deploy.train.resume import Resume, state_path_for

from .conftest import digits_config


class Stop(Exception):
    pass


def _stop_after_first_save(monkeypatch):
    """Let the first per-epoch save finish, then stop the run as a kill would."""
    real = Resume.save

    def save(self, parts, epoch, step, history):
        real(self, parts, epoch, step, history)
        raise Stop

    monkeypatch.setattr(Resume, "save", save)
    return lambda: monkeypatch.setattr(Resume, "save", real)


@pytest.mark.parametrize("method, extra", [
    ("odgq", {}),  # method state: the replayed perturbations
    ("qat", {"ema_decay": 0.9, "optimizer": "sgd"}),  # weight average, SGD momentum
])
def test_stopped_run_resumes_to_the_same_weights(tmp_path, monkeypatch, method, extra):
    cfg = digits_config(method, epochs=3, **extra)
    whole, whole_metrics, _ = train_model(cfg, progress=False)

    state = state_path_for(tmp_path / "model.safetensors")
    restore = _stop_after_first_save(monkeypatch)
    with pytest.raises(Stop):
        train_model(cfg, progress=False, state_path=state)
    restore()
    assert state.exists()
    real_load, loaded = Resume.load, []
    monkeypatch.setattr(Resume, "load", lambda self, parts: loaded.append(real_load(self, parts)) or loaded[-1])
    resumed, metrics, _ = train_model(cfg, progress=False, state_path=state)
    assert loaded[0][0] == 1  # it went on after epoch 1 instead of starting again
    assert state.exists()  # kept until the caller has saved the model (train_stage removes it then)
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert [h["loss"] for h in metrics["history"]] == [h["loss"] for h in whole_metrics["history"]]
    assert metrics["test_acc"] == whole_metrics["test_acc"]


def test_state_of_another_run_is_set_aside(tmp_path, monkeypatch):
    cfg = digits_config("qat", epochs=2)
    state = tmp_path / "s.train-state.safetensors"
    restore = _stop_after_first_save(monkeypatch)
    with pytest.raises(Stop):
        train_model(cfg, progress=False, state_path=state)
    restore()
    other = replace(cfg, train=replace(cfg.train, lr=1e-3))
    fresh, _, _ = train_model(other, progress=False)
    model, metrics, _ = train_model(other, progress=False, state_path=state)
    assert len(metrics["history"]) == 2
    assert torch.equal(fresh.state_dict()["fc2.weight"], model.state_dict()["fc2.weight"])
    assert (tmp_path / "s.train-state.safetensors.stale").exists()


def test_corrupt_state_is_refused_by_name(tmp_path):
    state = tmp_path / "s.train-state.safetensors"
    state.write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="s.train-state.safetensors: unreadable training state"):
        train_model(digits_config("qat"), progress=False, state_path=state)


def test_train_stage_resumes_and_leaves_no_state(tmp_path, monkeypatch):
    from robustq_deploy.train import train_stage

    cfg = digits_config("qat", epochs=2)
    restore = _stop_after_first_save(monkeypatch)
    with pytest.raises(Stop):
        train_stage(cfg, tmp_path, progress=False)
    restore()
    assert (tmp_path / "model.train-state.safetensors").exists()
    assert not (tmp_path / "model.safetensors").exists()  # nothing half-written
    art = train_stage(cfg, tmp_path, progress=False)
    assert len(art.meta["history"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".manifest.lock", "manifest.json", "model.safetensors"]
