"""Data-parallel training with torch.distributed (DistributedDataParallel).

Launch any training command under torchrun, e.g.
``torchrun --nproc-per-node 2 -m robustq_deploy train --config run.toml --out DIR``: each process
reads RANK / WORLD_SIZE / MASTER_ADDR from the environment, joins the group (gloo on the CPU,
NCCL on GPUs) and trains on its slice of every global batch; gradients are averaged by DDP.
Every process draws the same global permutation from the seeded generator and takes rows
``rank::world`` of each global batch, so a run with ``train.batch_size = B`` sees the same
examples per step whatever the number of processes. Quantizer observers reduce their statistic
over the processes (see :mod:`robustq_deploy.quant.modules`), so quantized models train as
with one process; only per-example random draws (random starts of attacks) differ. Rank 0
writes the checkpoint and the manifest; the other ranks wait for it.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (``WORLD_SIZE > 1``); returns whether it did.

    Safe to call twice and a no-op for a plain single-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_world_size() > 1


def shard(index: torch.Tensor) -> torch.Tensor:
    """This process's rows of a global batch (strided, so shards differ by at most one row)."""
    return index[rank()::world_size()]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP wrapper when distributed, the model itself otherwise."""
    if not active():
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (attacks run on it, outside gradient synchronisation)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor (first dimension may differ per process) from all processes."""
    if not active():
        return t
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=t.device))
    top = int(max(s.item() for s in sizes))
    pad = torch.zeros((top - t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
    parts = [torch.empty((top,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device) for _ in sizes]
    dist.all_gather(parts, torch.cat([t, pad]))
    return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)])


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if active():
        dist.barrier()
