"""Data-parallel training: 2 processes under torchrun (gloo on the CPU) give the model one process
trains with the same global batch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustq_deploy.config import to_dict
from robustq_deploy.train import read_checkpoint, train_model
from robustq_deploy.train.distributed import all_gather_cat, shard, world_size

from .conftest import digits_config

REPO = Path(__file__).resolve().parents[2]


def torchrun(cfg, out: Path, tmp_path: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(to_dict(cfg)))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           "-m", "robustq_deploy", "-q", "train", "--config", str(path), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_single_process_helpers_are_identities():
    t = torch.arange(6)
    assert world_size() == 1 and torch.equal(shard(t), t) and torch.equal(all_gather_cat(t), t)


def test_two_processes_train_the_same_model_as_one(tmp_path):
    # int8 (observers reduce over processes), PGD without random start (no per-process draws);
    # 320 examples = 5 global batches of 64, each split 32 + 32. Runs much longer than this drift
    # apart by more than float tolerance: the reduction order changes the last bits, and a sign
    # step or a rounding decision then flips.
    cfg = digits_config("pgd-at", 8, epochs=1, train_limit=320, **{"attack": {"eps": 0.1, "steps": 2, "random_start": False}})
    proc = torchrun(cfg, tmp_path / "ddp", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, _ = read_checkpoint(tmp_path / "ddp" / "model.safetensors")
    single, _, _ = train_model(cfg, progress=False)
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4), name
    assert (tmp_path / "ddp" / "manifest.json").exists()


@pytest.mark.slow
def test_odgq_replay_buffer_under_two_processes(tmp_path):
    cfg = digits_config("odgq", 8, epochs=2, train_limit=320)
    proc = torchrun(cfg, tmp_path / "ddp", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, _ = read_checkpoint(tmp_path / "ddp" / "model.safetensors")
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())
