"""Canonical Relax forms of integer layers when compiling for the accelerator.

The compile stage lowers each integer layer through its per-op hook
(:mod:`robustq_deploy.compile.implementations`); for CPU targets faster implementations may win
(tiled x86 kernels, XNOR/popcount over packed words as TIR). Those are opaque ``call_tir``
functions the partitioner cannot read. The accelerator backend therefore compiles with this
module's library (:data:`NAME`), whose implementations, registered above every other, hand each
layer to the exact generic form instead: ``nn.conv2d`` / ``matmul`` on int8 operands with
constant int8 weights (bit-packed binary and ternary weights unpacked to their -1/0/+1 levels
at compile time), which :mod:`.patterns` matches. Same integers as every other implementation
(the hook's contract); layers the accelerator then declines run that generic form on the host.
"""
from __future__ import annotations

from ..compile.implementations import OpCall, lower, register_implementation

NAME = "accel-canonical"
PRIORITY = 100  # above the generic (0), XNOR TIR (1) and the tiled kernels (10)
_GENERIC = {"int_conv2d": "generic", "int_matmul": "generic", "binary_conv2d": "unpacked",
            "binary_gemm": "unpacked", "ternary_conv2d": "unpacked", "ternary_gemm": "unpacked"}


def _canonical(generic: str):
    def impl(call: OpCall):
        return lower(call, only=generic)
    impl.__doc__ = f"The {generic!r} implementation, for the accelerator's partitioner."
    return impl


for _op, _generic in _GENERIC.items():
    register_implementation(_op, NAME, priority=PRIORITY, library=NAME)(_canonical(_generic))


__all__ = ["NAME", "PRIORITY"]
