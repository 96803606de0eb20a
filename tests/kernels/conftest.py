"""Shared fixtures of the kernel tests: targets, lowerings, and a runner for one PrimFunc.

Every kernel is built for the host CPU (VNNI where it has it) and for CPUs without a dot-product
instruction (the vector fallback), which this x86-64 machine can also run, so both lowerings are
checked bit for bit against the numpy references.
"""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from kernels.features import features_of, host_target  # noqa: E402
from kernels.schedule import lowering_for  # noqa: E402
from kernels.binary import bit_lowering  # noqa: E402

# host (cascadelake here: VNNI, no VPOPCNTDQ); skylake-avx512: AVX-512 without VNNI; x86-64: SSE only
TARGETS = {"host": None, "avx512-no-vnni": "skylake-avx512", "sse": "x86-64"}


def make_target(cpu: str | None):
    return host_target(2) if cpu is None else tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 2})


@pytest.fixture(params=list(TARGETS), scope="session")
def target(request):
    """Every lowering (use for a few representative cases: each build takes about a second)."""
    return make_target(TARGETS[request.param])


@pytest.fixture(scope="session")
def host():
    return make_target(None)


def lowering(target):
    return lowering_for(features_of(target))


def bits(target):
    return bit_lowering(features_of(target))


def run_primfunc(func, target, args: list[np.ndarray], n_out: int) -> list[np.ndarray]:
    """Build ``func`` for ``target``, call it on ``args`` (outputs last) and return the outputs."""
    lib = tvm.tirx.build(tvm.IRModule({"main": func}), target=target)
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    lib["main"](*tensors)
    return [t.numpy() for t in tensors[-n_out:]]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def requant_params(r: np.random.Generator, channels: int, outputs: int = 1, residual: bool = False) -> dict:
    """Realistic per-channel fixed-point multipliers (M in [5e-4, 5e-3])."""
    from robustq_deploy.quant.fixed_point import quantize_multiplier

    p = {}
    if residual:
        p["add_m0"], p["add_shift"] = quantize_multiplier(r.uniform(1e-3, 1e-2, channels))
    for i in range(outputs):
        p[f"m0_{i}"], p[f"shift_{i}"] = quantize_multiplier(r.uniform(5e-4, 5e-3, channels))
    return p
