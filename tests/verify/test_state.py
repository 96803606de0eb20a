"""The resumable state file: round trip, fingerprint and corruption handling, seeded units."""
import torch

from robustq_deploy.verify.state import STATE_NAME, RunState, fingerprint, seeded_generator


def test_round_trip_and_fingerprint(tmp_path):
    fp = fingerprint({"config": 1})
    s = RunState(tmp_path, fp).load()
    s.put("main/b0", {"twin.code": torch.tensor([-1, 0, 2])}, {"queries": {"pgd": {"twin": 3}}})
    again = RunState(tmp_path, fp).load()
    assert again.done("main/b0") and again.resumed_units == 1 and again.discarded is None
    tensors, scalars = again.get("main/b0")
    assert tensors["twin.code"].tolist() == [-1, 0, 2] and scalars == {"queries": {"pgd": {"twin": 3}}}
    other = RunState(tmp_path, fingerprint({"config": 2})).load()
    assert not other.done("main/b0") and "different" in other.discarded
    other.remove()
    assert not (tmp_path / STATE_NAME).exists()


def test_corrupt_state_is_ignored(tmp_path):
    (tmp_path / STATE_NAME).write_bytes(b"garbage")
    s = RunState(tmp_path, "fp").load()
    assert s.discarded.startswith("unreadable") and not s.scalars


def test_seeded_generators_depend_only_on_their_keys():
    a = torch.rand(3, generator=seeded_generator(0, "main/b1", "pgd"))
    assert torch.equal(a, torch.rand(3, generator=seeded_generator(0, "main/b1", "pgd")))
    assert not torch.equal(a, torch.rand(3, generator=seeded_generator(0, "main/b2", "pgd")))
    assert not torch.equal(a, torch.rand(3, generator=seeded_generator(1, "main/b1", "pgd")))


def test_forged_unit_results_are_not_trusted(tmp_path, monkeypatch):
    """Editing a unit's results (every point robust, say) breaks the seal: the state is set aside."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    monkeypatch.setenv("ROBUSTQ_CACHE_DIR", str(tmp_path / "cache"))
    fp = fingerprint({"config": 1})
    RunState(tmp_path, fp).load().put("main/b0", {"twin.code": torch.tensor([1, 2, 1])}, {"queries": {}})
    path = tmp_path / STATE_NAME
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file({"main/b0/twin.code": torch.tensor([-1, -1, -1])}, str(path), metadata=meta)  # forged: all robust
    s = RunState(tmp_path, fp).load()
    assert not s.done("main/b0") and "seal" in s.discarded
    # the same file with its original content still loads: the seal is what failed
    RunState(tmp_path, fp).load().put("main/b0", {"twin.code": torch.tensor([1, 2, 1])}, {"queries": {}})
    assert RunState(tmp_path, fp).load().done("main/b0")
