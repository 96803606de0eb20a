"""Shared fixtures of the kernel tests: targets, lowerings, and a runner for one PrimFunc.

Every kernel is built for the host CPU (VNNI where it has it) and for CPUs without a dot-product
instruction (the vector fallback), which this x86-64 machine can also run, so both lowerings are
checked bit for bit against the numpy references. :func:`odd_widths_twin` is a small network whose
layer widths fill no lane tile, so every layer reads padded channels or features.
"""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from robustq_deploy.kernels.features import features_of, host_target  # noqa: E402
from robustq_deploy.kernels.schedule import lowering_for  # noqa: E402
from robustq_deploy.kernels.binary import bit_lowering  # noqa: E402

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
    from robustq_deploy.fixed_point import quantize_multiplier

    p = {}
    if residual:
        p["add_m0"], p["add_shift"] = quantize_multiplier(r.uniform(1e-3, 1e-2, channels))
    for i in range(outputs):
        p[f"m0_{i}"], p[f"shift_{i}"] = quantize_multiplier(r.uniform(5e-4, 5e-3, channels))
    return p


def odd_widths_twin(shape: tuple[int, int, int] = (1, 8, 8), seed: int = 0):
    """A calibrated twin of conv3x3(6) - relu - conv3x3/2(10) - relu - fc(50) - relu - fc(30) - relu
    - fc(10): no width is a multiple of 4, 8 or 16 (the kernels' lane counts), so the stored
    channels and features of every layer are padded."""
    import torch
    from torch import nn

    from robustq_deploy.config import QuantConfig
    from robustq_deploy.models import first_layer_spec
    from robustq_deploy.quant import QConv2d, QLinear, layer_spec

    class OddWidths(nn.Module):
        def __init__(self, quant: QuantConfig):
            super().__init__()
            c, h, w = shape
            spec1, pixel = first_layer_spec(quant, "conv1")
            self.conv1 = QConv2d(c, 6, 3, spec1, padding=1, in_fixed_scale=pixel)
            self.conv2 = QConv2d(6, 10, 3, layer_spec(quant, "conv2"), stride=2, padding=1)
            self.fc1 = QLinear(10 * ((h + 1) // 2) * ((w + 1) // 2), 50, layer_spec(quant, "fc1"))
            self.fc2 = QLinear(50, 30, layer_spec(quant, "fc2"))
            self.fc3 = QLinear(30, 10, layer_spec(quant, "fc3"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            x = torch.relu(self.fc1(torch.flatten(x, 1)))
            return self.fc3(torch.relu(self.fc2(x)))

    torch.manual_seed(seed)
    m = OddWidths(QuantConfig())
    m.arch, m.num_classes, m.input_shape = "odd-widths", 10, tuple(shape)
    return calibrate(m, shape)


def calibrate(m, shape):
    """Activation ranges (and BatchNorm statistics) from three batches of random images; eval mode."""
    import torch

    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(16, *shape))
    return m.eval()


def calibrated_twin(arch: str, shape, quant=None, seed: int = 0):
    """A seeded twin of a registered ``arch`` with calibrated activation ranges."""
    import torch

    from robustq_deploy.config import QuantConfig
    from robustq_deploy.models import build_model

    torch.manual_seed(seed)
    return calibrate(build_model(arch, quant or QuantConfig(), 10, shape), shape)
