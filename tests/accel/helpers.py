"""Helpers of the accelerator tests: synthetic layers, their numpy reference, and running one
layer's generated C through the host driver with ctypes."""
from __future__ import annotations

import ctypes
from dataclasses import replace
from pathlib import Path

import numpy as np

from robustq_deploy.accel import codegen, driver
from robustq_deploy.accel.desc import AccelDesc, ArrayShape
from robustq_deploy.accel.layer import OffloadLayer
from robustq_deploy.accel.schedule import Schedule, plan
from robustq_deploy.accel.simlib import build_library
from robustq_deploy.export.reference.intmath import int_conv2d, wrap_int32
from robustq_deploy.fixed_point import requantize

CT = {"uint8": ctypes.c_uint8, "int8": ctypes.c_int8, "int32": ctypes.c_int32}


def small_desc(**changes) -> AccelDesc:
    """A tiny accelerator (4x4 MAC, 2x64 XNOR) whose buffers force tiling on small layers."""
    base = AccelDesc(name="test", clock_mhz=100.0, mac_array=ArrayShape(4, 4), weight_buffer_kib=1.0,
                     act_buffer_kib=1.0, dram_gb_per_s=1.0, xnor_array=ArrayShape(2, 64),
                     weight_bits=("8", "4", "ternary", "binary"), act_bits=("8", "binary"), layer_setup_cycles=10,
                     pipeline_depth=3)
    return replace(base, **changes)


def conv_spec(rng: np.random.Generator, *, c=3, h=9, w=9, m=10, k=3, stride=1, pads=(1, 1, 1, 1), pool=2,
              epilogue="requant", in_dtype="uint8", weights="int8", bias=True, name="layer") -> OffloadLayer:
    """A random conv layer (``h = w = 1``, ``k = 1``, no pads/pool for a matrix product)."""
    kind = "gemm" if h == 1 and w == 1 and k == 1 else "conv"
    if weights == "binary":
        wt = rng.choice(np.array([-1, 1], np.int8), size=(m, c, k, k))
    elif weights == "ternary":
        wt = rng.integers(-1, 2, size=(m, c, k, k)).astype(np.int8)
    else:
        wt = rng.integers(-127, 128, size=(m, c, k, k)).astype(np.int8)
    x_binary = in_dtype == "binary"
    fields = dict(name=name, kind=kind, in_dtype="int8" if x_binary else in_dtype, x_binary=x_binary, c=c, h=h, w=w,
                  m=m, kh=k, kw=k, stride=(stride, stride), pads=tuple(pads), weights=wt,
                  bias=rng.integers(-2000, 2000, size=m).astype(np.int32) if bias else None, epilogue=epilogue,
                  out_dtype="int32", pool=pool, pattern="test")
    if epilogue == "requant":
        fields.update(out_dtype="uint8", m0=rng.integers(2**30, 2**31, size=m).astype(np.int64),
                      shift=rng.integers(38, 44, size=m).astype(np.int64), qmin=0, qmax=255)
    elif epilogue == "sign":
        fields.update(out_dtype="int8", th_lo=rng.integers(-50, 50, size=m).astype(np.int32),
                      th_hi=rng.integers(0, 400, size=m).astype(np.int32))
    return OffloadLayer(**fields)


def random_input(rng: np.random.Generator, spec: OffloadLayer, n: int) -> np.ndarray:
    shape = (n, *spec.in_shape)
    if spec.x_binary:
        return rng.choice(np.array([-1, 1], np.int8), size=shape)
    if spec.in_dtype == "uint8":
        return rng.integers(0, 256, size=shape).astype(np.uint8)
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def reference_layer(spec: OffloadLayer, x: np.ndarray) -> np.ndarray:
    """The layer in numpy: exact conv, int32 bias, fixed-point requant / thresholds, max pool."""
    x4 = x.reshape(len(x), spec.c, spec.h, spec.w)
    acc = wrap_int32(int_conv2d(x4, spec.weights, spec.stride, spec.pads))
    if spec.bias is not None:
        acc = acc + spec.bias.reshape(1, -1, 1, 1)
    ch = (1, -1, 1, 1)
    if spec.epilogue == "requant":
        y = requantize(acc, spec.m0.reshape(ch), spec.shift.reshape(ch), 0, spec.qmin, spec.qmax).astype(spec.out_dtype)
    elif spec.epilogue == "sign":
        ok = acc >= spec.th_lo.reshape(ch)
        if spec.th_hi is not None:
            ok &= acc <= spec.th_hi.reshape(ch)
        y = np.where(ok, 1, -1).astype(np.int8)
    else:
        y = acc.astype(np.int32)
    p = spec.pool
    if p > 1:
        n, m, oh, ow = y.shape
        y = y[:, :, :oh // p * p, :ow // p * p].reshape(n, m, oh // p, p, ow // p, p).max(axis=(3, 5))
    return y.reshape(len(x), *spec.out_shape)


def build_layers(specs: list[OffloadLayer], desc: AccelDesc, out_dir: Path) -> tuple[ctypes.CDLL, list[Schedule], dict]:
    """Generate and compile the C of ``specs`` for ``desc``; the loaded library, schedules, sources."""
    schedules = plan(specs, desc)
    files = {"fpga_hls.h": codegen.HLS_HEADER, **driver.sources(specs, schedules)}
    for s, sch in zip(specs, schedules):
        files.update(codegen.layer_sources(s, sch))
    lib = out_dir / "libfpga_sim.so"
    build_library(files, lib)
    return ctypes.CDLL(str(lib)), schedules, files


def run_layer(lib: ctypes.CDLL, spec: OffloadLayer, x: np.ndarray) -> np.ndarray:
    """One layer of the simulation library through its host driver function."""
    x = np.ascontiguousarray(x)
    y = np.zeros((len(x), *spec.out_shape), spec.out_dtype)
    fn = getattr(lib, f"fpga_run_{spec.name}")
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.POINTER(CT[spec.in_dtype]), ctypes.POINTER(CT[spec.out_dtype]), ctypes.c_int64]
    rc = fn(x.ctypes.data_as(ctypes.POINTER(CT[spec.in_dtype])), y.ctypes.data_as(ctypes.POINTER(CT[spec.out_dtype])),
            len(x))
    assert rc == 0
    return y
