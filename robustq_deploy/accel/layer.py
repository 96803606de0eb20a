"""One offloaded layer as the accelerator sees it, and whether an accelerator can run it.

:class:`OffloadLayer` is target independent: geometry, operand dtypes, the integer weights, bias
and the epilogue, exactly as the partitioner found them in the Relax graph
(:mod:`.patterns`). A matrix product ``x[N, K] @ w[K, M]`` is the 1x1 convolution of a 1x1
image with ``K`` channels, so one kernel template (:mod:`.codegen`) and one cost model serve both.

Semantics (bit for bit the project's, :mod:`robustq_deploy.fixed_point`)::

    acc[m]  = bias[m] + sum_k x[k] * w[m, k]                      (int32)
    requant : y = clamp(((acc * m0[m] + 2^(n[m]-1)) >> n[m]), qmin, qmax)   (int64, floor shift)
    sign    : y = +1 if lo[m] <= acc <= hi[m] else -1              (int8)
    none    : y = acc                                                 (int32)
    pool    : max over non-overlapping P x P windows of y

:func:`datapath` picks the engine (MAC array, or the XNOR array for binary x binary without
padding) and the narrowest weight format the accelerator lists that holds the weights' values;
:func:`problems` lists every reason an accelerator cannot run the layer (empty: it can).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .desc import FORMAT_BITS, AccelDesc

INT32_MAX = 2**31 - 1
EPILOGUES = ("requant", "sign", "none")
_FORMAT_RANGE = {"binary": None, "ternary": 1, "4": 7, "8": 127}  # max |w|; binary: exactly +-1


@dataclass(frozen=True, eq=False)
class OffloadLayer:
    name: str  # C identifier, from the ONNX layer when known
    kind: str  # "conv" or "gemm"
    in_dtype: str  # "uint8" / "int8"
    x_binary: bool  # input known to hold only -1 / +1
    c: int
    h: int
    w: int
    m: int
    kh: int
    kw: int
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    weights: np.ndarray  # int8 [M, C, KH, KW]
    bias: np.ndarray | None  # int32 [M]
    epilogue: str  # "requant", "sign", "none"
    out_dtype: str  # "uint8" / "int8" / "int32"
    m0: np.ndarray | None = None  # int64 [M] (requant)
    shift: np.ndarray | None = None  # int64 [M] (requant)
    qmin: int = 0
    qmax: int = 0
    th_lo: np.ndarray | None = None  # int32 [M] (sign)
    th_hi: np.ndarray | None = None  # int32 [M] (sign), None: no upper bound
    pool: int = 1  # P of a fused P x P / stride P max pool (1: none)
    pattern: str = ""  # composite name, e.g. "fpga_sim.conv_bias_requant_pool"

    @property
    def symbol(self) -> str:
        return f"fpga_{self.name}"

    @property
    def k(self) -> int:
        return self.c * self.kh * self.kw

    @property
    def oh(self) -> int:
        return (self.h + self.pads[0] + self.pads[2] - self.kh) // self.stride[0] + 1

    @property
    def ow(self) -> int:
        return (self.w + self.pads[1] + self.pads[3] - self.kw) // self.stride[1] + 1

    @property
    def out_h(self) -> int:
        return self.oh // self.pool

    @property
    def out_w(self) -> int:
        return self.ow // self.pool

    @property
    def conv_rows(self) -> int:
        """Convolution output rows computed (the pooled rows' windows; trailing rows a floor-mode
        pool drops are not computed)."""
        return self.out_h * self.pool

    @property
    def conv_cols(self) -> int:
        return self.out_w * self.pool

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image (computed rows and columns only)."""
        return self.conv_rows * self.conv_cols * self.m * self.k

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Per image, as the host passes it (NCHW without N; [K] for a matrix product)."""
        return (self.c,) if self.kind == "gemm" else (self.c, self.h, self.w)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.m,) if self.kind == "gemm" else (self.m, self.out_h, self.out_w)

    @property
    def padded(self) -> bool:
        return any(self.pads)

    def weight_matrix(self) -> np.ndarray:
        """int8 ``[M, K]`` in the ``k = (c * KH + i) * KW + j`` order of the im2col patch."""
        return self.weights.reshape(self.m, self.k)

    def describe(self) -> str:
        if self.kind == "gemm":
            shape = f"[{self.c}] -> [{self.m}]"
        else:
            shape = (f"{self.kh}x{self.kw}/{self.stride[0]} pad {list(self.pads)} [{self.c},{self.h},{self.w}] -> "
                     f"[{self.m},{self.oh},{self.ow}]")
            if self.pool > 1:
                shape += f" maxpool {self.pool} -> [{self.m},{self.out_h},{self.out_w}]"
        return f"{self.kind} {shape}, {self.epilogue}, {self.in_dtype} -> {self.out_dtype}"


def weight_format(values: np.ndarray, allowed) -> str | None:
    """The narrowest format of ``allowed`` that holds every weight value (None: none does)."""
    v = np.asarray(values)
    for fmt in FORMAT_BITS:  # narrowest first
        if fmt not in allowed:
            continue
        limit = _FORMAT_RANGE[fmt]
        if limit is None:
            if v.size and np.isin(v, (-1, 1)).all():
                return fmt
        elif v.size == 0 or int(np.abs(v.astype(np.int64)).max()) <= limit:
            return fmt
    return None


def values_needed(values: np.ndarray) -> str:
    """The narrowest format of any accelerator that holds the weights (for messages)."""
    return weight_format(values, tuple(FORMAT_BITS)) or "more than 8 bits"


@dataclass(frozen=True)
class Datapath:
    engine: str  # "mac" or "xnor"
    weight_format: str  # key of FORMAT_BITS
    act_format: str  # "8" or "binary"

    @property
    def weight_bits(self) -> int:
        return 1 if self.engine == "xnor" else FORMAT_BITS[self.weight_format]


def datapath(spec: OffloadLayer, desc: AccelDesc) -> tuple[Datapath | None, list[str]]:
    """The engine and formats that run ``spec`` on ``desc``, or the reasons none does."""
    wf = weight_format(spec.weights, desc.weight_bits)
    binary_w = weight_format(spec.weights, ("binary",)) == "binary"
    if (spec.x_binary and binary_w and not spec.padded and desc.xnor_array is not None
            and "binary" in desc.act_bits and "binary" in desc.weight_bits):
        return Datapath("xnor", "binary", "binary"), []
    problems = []
    if wf is None:
        problems.append(f"weights need {values_needed(spec.weights)}; the accelerator takes "
                        f"{', '.join(desc.weight_bits)}")
    act = "binary" if spec.x_binary and "binary" in desc.act_bits and "8" not in desc.act_bits else "8"
    if act not in desc.act_bits:
        problems.append(f"{spec.in_dtype} activations need 8 bits; the accelerator takes {', '.join(desc.act_bits)}")
    if problems:
        return None, problems
    return Datapath("mac", wf, act), []


def accumulator_bound(spec: OffloadLayer) -> int:
    """Largest ``|acc|`` any input can produce (int32 must hold it: no wrap-around on the array)."""
    xmax = 1 if spec.x_binary else (255 if spec.in_dtype == "uint8" else 128)
    wsum = np.abs(spec.weight_matrix().astype(np.int64)).sum(axis=1)
    b = np.abs(spec.bias.astype(np.int64)) if spec.bias is not None else 0
    return int((xmax * wsum + b).max()) if spec.m else 0


def problems(spec: OffloadLayer, desc: AccelDesc) -> list[str]:
    """Every reason ``desc`` cannot run ``spec`` (buffer fit is checked by :mod:`.schedule`)."""
    _, out = datapath(spec, desc)
    if accumulator_bound(spec) > INT32_MAX:
        out.append("the int32 accumulator could overflow for some inputs")
    if spec.pool > 1 and not desc.max_pool:
        out.append("the accelerator has no fused max pooling")
    return out


__all__ = ["Datapath", "EPILOGUES", "OffloadLayer", "accumulator_bound", "datapath", "problems", "values_needed",
           "weight_format"]
