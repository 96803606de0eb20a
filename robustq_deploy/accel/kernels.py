"""Canonical Relax forms of integer layers when compiling for the accelerator target.

The compile stage lowers each integer layer through its kernel hook
(:mod:`robustq_deploy.compile.kernels`); for CPU targets faster implementations may win
(tiled x86 kernels, XNOR/popcount over packed words as TIR). Those are opaque ``call_tir``
functions the partitioner cannot read. For a target whose runner is ``fpga-sim`` this module's
implementation, registered above every other, hands each layer to the exact generic form instead:
``nn.conv2d`` / ``matmul`` on int8 operands with constant int8 weights (bit-packed binary and
ternary weights unpacked to their -1/0/+1 levels at compile time), which :mod:`.patterns`
matches. Same integers as every other implementation (the hook's contract); layers the
accelerator then declines run that generic form on the host.
"""
from __future__ import annotations

from ..compile.kernels import KernelCall, lower, register_kernel

RUNNER = "fpga-sim"
NAME = "fpga-sim-canonical"
PRIORITY = 100  # above the generic (0), XNOR TIR (1) and the kernels/ library (10)
_GENERIC = {"int_conv2d": "generic", "int_matmul": "generic", "binary_conv2d": "unpacked",
            "binary_gemm": "unpacked", "ternary_conv2d": "unpacked", "ternary_gemm": "unpacked"}


def for_accelerator(call: KernelCall) -> bool:
    return call.target is not None and getattr(call.target, "runner", None) == RUNNER


def _canonical(generic: str):
    def impl(call: KernelCall):
        if not for_accelerator(call):
            return None
        return lower(call, only=generic)
    impl.__doc__ = f"The {generic!r} implementation, for the fpga-sim target."
    return impl


for _op, _generic in _GENERIC.items():
    register_kernel(_op, NAME, priority=PRIORITY)(_canonical(_generic))


__all__ = ["NAME", "PRIORITY", "RUNNER", "for_accelerator"]
