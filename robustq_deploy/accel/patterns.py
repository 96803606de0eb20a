"""Relax dataflow patterns of the layers the accelerator runs, and their reading into a OffloadLayer.

The compile stage imports integer layers in one canonical form (:mod:`.kernels` makes sure of it
for this target), so an offloadable layer is a chain in ``main``::

    acc  = nn.conv2d(x, W, out_dtype="int32")  |  matmul(x, W, out_dtype="int32")   W constant int8
  [ acc  = add(acc, bias) ]                                                          bias constant int32
  [ requant: astype(int64) -> multiply(m0) -> add(2^(n-1)) -> right_shift(n) -> clip -> astype
  | sign:    where(greater_equal(acc, lo) [and less_equal(acc, hi)], 1, -1) ]
  [ nn.max_pool2d(P, stride P) ]

(:func:`robustq_deploy.compile.arith.requantize_fixed`, the bias add of the converters, the
BatchNorm+sign thresholds of :mod:`robustq_deploy.export.bnfold`). :func:`fusion_patterns` builds
one ``tvm.relax.dpl`` pattern per combination, longest first, named ``fpga_sim.<parts>``; the
names of the sub-patterns (``x``, ``w``, ``acc``, ``bias``, ``m0``, ...) are what
:func:`read_layer` reads. The same function reads a match during fusion (the pattern's check)
and a composite function during code generation (:func:`match_composite`), so the partition and
the code can never disagree.

To offload a new op chain: add its pattern here, give :func:`read_layer` its reading, extend
:class:`.layer.OffloadLayer` and :mod:`.codegen` if the semantics are new.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import product
from typing import Any

import numpy as np

from ..compile.registry import const_value
from ..dtypes import int_range
from .layer import OffloadLayer

CODEGEN = "fpga_sim"
ACC_OPS = {"conv": "relax.nn.conv2d", "gemm": "relax.matmul"}
_ACT_DTYPES = ("uint8", "int8")
_OUT_DTYPES = ("uint8", "int8")  # what an offloaded layer may write


def _build(kind: str, bias: bool, epilogue: str, pool: bool):
    from tvm.relax.dpl import is_const, is_op, wildcard

    x, w = wildcard(), is_const()
    acc = is_op(ACC_OPS[kind])(x, w)
    ann = {"x": x, "w": w, "acc": acc}
    y = acc
    if bias:
        b = is_const()
        y = is_op("relax.add")(y, b)
        ann["bias"] = b
    pre = y
    if epilogue == "requant":
        m0, rnd, sh = is_const(), is_const(), is_const()
        c64 = is_op("relax.astype")(pre)
        y = is_op("relax.right_shift")(is_op("relax.add")(is_op("relax.multiply")(c64, m0), rnd), sh)
        clip = is_op("relax.clip")(y, wildcard(), wildcard())
        y = is_op("relax.astype")(clip)
        ann.update(c64=c64, m0=m0, rnd=rnd, shift=sh, clip=clip, cast=y)
    elif epilogue in ("sign", "sign2"):
        lo, one, minus = is_const(), is_const(), is_const()
        cond = is_op("relax.greater_equal")(pre, lo)
        ann["lo"] = lo
        if epilogue == "sign2":
            hi = is_const()
            cond = is_op("relax.logical_and")(cond, is_op("relax.less_equal")(pre, hi))
            ann["hi"] = hi
        y = is_op("relax.where")(cond, one, minus)
        ann.update(one=one, minus=minus, where=y)
    if pool:
        y = is_op("relax.nn.max_pool2d")(y)
        ann["pool"] = y
    ann["out"] = y
    parts = [kind] + (["bias"] if bias else []) + ([] if epilogue == "none" else [epilogue]) + (["pool"] if pool else [])
    return f"{CODEGEN}.{'_'.join(parts)}", y, ann


def _length(key) -> int:
    kind, bias, epilogue, pool = key
    return {"none": 0, "sign": 2, "sign2": 4, "requant": 6}[epilogue] + bias + pool


@lru_cache(maxsize=1)
def pattern_table() -> dict[str, tuple[Any, dict[str, Any]]]:
    """``name -> (pattern, annotations)`` for every offloadable chain, longest chains first."""
    keys = [k for k in product(("conv", "gemm"), (True, False), ("requant", "sign2", "sign", "none"), (True, False))
            if not (k[3] and (k[0] == "gemm" or k[2] == "none"))]
    keys.sort(key=lambda k: -_length(k))
    table = {}
    for key in keys:
        name, pat, ann = _build(*key)
        table[name] = (pat, ann)
    return table


# ----------------------------------------------------------------------------- reading a match


def _static_shape(expr) -> list[int | None]:
    return [int(d.value) if hasattr(d, "value") else None for d in expr.ty.shape.values]


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _per_channel(value: np.ndarray, tail: tuple[int, ...], what: str) -> tuple[np.ndarray | None, str | None]:
    """A constant that broadcasts against an accumulator ``[N, *tail]`` (channel first in
    ``tail``) as a per-channel vector ``[M]``; or why it is not one."""
    a = np.asarray(value)
    full = (1, *tail)
    if a.ndim > len(full):
        return None, f"{what} has rank {a.ndim}"
    try:
        b = np.broadcast_to(a, full)
    except ValueError:
        return None, f"{what} of shape {list(a.shape)} does not broadcast per channel"
    rows = b.reshape(tail[0], -1)
    if not (rows == rows[:, :1]).all():
        return None, f"{what} varies within a channel"
    return np.ascontiguousarray(rows[:, 0]), None


def _geometry(kind: str, acc, x, w_val: np.ndarray) -> tuple[dict | None, list[str]]:
    """Shapes and conv attributes of the accumulating op (or the reasons they are unsupported)."""
    xs = _static_shape(x)
    out: list[str] = []
    if _dtype(x) not in _ACT_DTYPES:
        out.append(f"activation dtype {_dtype(x)} (a nonzero zero point widens it; the array takes uint8/int8)")
    if w_val.dtype != np.int8:
        out.append(f"weight dtype {w_val.dtype}; the array takes int8")
    if str(acc.attrs.out_dtype) != "int32":
        out.append(f"accumulator dtype {acc.attrs.out_dtype}")
    if kind == "gemm":
        if len(xs) != 2 or w_val.ndim != 2 or xs[1] is None:
            return None, out + [f"matmul of rank {len(xs)} x {w_val.ndim} (the array takes [N, K] x [K, M])"]
        k, m = w_val.shape
        geo = dict(c=int(k), h=1, w=1, m=int(m), kh=1, kw=1, stride=(1, 1), pads=(0, 0, 0, 0),
                   weights=np.ascontiguousarray(w_val.T).reshape(m, k, 1, 1))
        return (geo if not out else None), out
    a = acc.attrs
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != ("NCHW", "OIHW", "NCHW"):
        out.append(f"layout {a.data_layout}/{a.kernel_layout}")
    if int(a.groups) != 1:
        out.append(f"grouped convolution (groups={int(a.groups)})")
    if any(int(d) != 1 for d in a.dilation):
        out.append(f"dilation {[int(d) for d in a.dilation]}")
    if len(xs) != 4 or any(d is None for d in xs[1:]):
        out.append("input shape is not static (only the batch may vary)")
    if out:
        return None, out
    return dict(c=xs[1], h=xs[2], w=xs[3], m=int(w_val.shape[0]), kh=int(w_val.shape[2]), kw=int(w_val.shape[3]),
                stride=tuple(int(s) for s in a.strides), pads=tuple(int(p) for p in a.padding),
                weights=np.ascontiguousarray(w_val)), []


def read_layer(named: dict[str, Any], name: str = "layer", x_binary: bool = False,
               pattern: str = "") -> tuple[OffloadLayer | None, list[str]]:
    """A :class:`OffloadLayer` of a match (sub-pattern name -> Relax expression), or the reasons the
    matched chain is not one the accelerator can compute."""
    acc = named["acc"]
    kind = "conv" if acc.op.name == ACC_OPS["conv"] else "gemm"
    w_val = const_value(named["w"])
    if w_val is None:
        return None, ["weights are not a constant"]
    geo, problems = _geometry(kind, acc, named["x"], w_val)
    if geo is None:
        return None, problems
    oh = (geo["h"] + geo["pads"][0] + geo["pads"][2] - geo["kh"]) // geo["stride"][0] + 1
    ow = (geo["w"] + geo["pads"][1] + geo["pads"][3] - geo["kw"]) // geo["stride"][1] + 1
    tail = (geo["m"],) if kind == "gemm" else (geo["m"], oh, ow)
    fields: dict[str, Any] = dict(name=name, kind=kind, in_dtype=_dtype(named["x"]), x_binary=x_binary, bias=None,
                                  epilogue="none", out_dtype="int32", pattern=pattern, **geo)
    if "bias" in named:
        fields["bias"], why = _per_channel(const_value(named["bias"]), tail, "bias")
        if why:
            problems.append(why)
        elif fields["bias"].dtype != np.int32:
            problems.append(f"bias dtype {fields['bias'].dtype}")
    if "m0" in named:
        problems += _read_requant(named, tail, fields)
    elif "lo" in named:
        problems += _read_sign(named, tail, fields)
    if "pool" in named:
        problems += _read_pool(named["pool"], fields)
    if problems:
        return None, problems
    return OffloadLayer(**fields), []


def _read_requant(named, tail, fields) -> list[str]:
    if _dtype(named["c64"]) != "int64":
        return ["requantization does not widen to int64"]
    vals = {}
    for key in ("m0", "rnd", "shift"):
        vals[key], why = _per_channel(const_value(named[key]), tail, key)
        if why:
            return [why]
    n = vals["shift"].astype(np.int64)
    if n.min() < 1 or n.max() > 62 or vals["m0"].min() < 0 or vals["m0"].max() >= 2**31:
        return ["fixed-point multiplier outside 0 <= m0 < 2^31, 1 <= n <= 62"]
    if not np.array_equal(vals["rnd"].astype(np.int64), np.left_shift(np.int64(1), n - 1)):
        return ["rounding constant is not 2^(n-1)"]
    out_dtype = _dtype(named["cast"])
    clip = named["clip"]
    qmin, qmax = int(clip.args[1].value), int(clip.args[2].value)
    if out_dtype not in _OUT_DTYPES or qmin < int_range(out_dtype)[0] or qmax > int_range(out_dtype)[1]:
        return [f"requantized output {out_dtype} [{qmin}, {qmax}] (the array writes uint8/int8)"]
    fields.update(epilogue="requant", out_dtype=out_dtype, m0=vals["m0"].astype(np.int64), shift=n, qmin=qmin,
                  qmax=qmax)
    return []


def _read_sign(named, tail, fields) -> list[str]:
    one, minus = (np.asarray(const_value(named[k])) for k in ("one", "minus"))
    if one.size != 1 or minus.size != 1 or int(one.reshape(())) != 1 or int(minus.reshape(())) != -1:
        return ["select of values other than +1 / -1"]
    if _dtype(named["where"]) != "int8":
        return [f"sign output dtype {_dtype(named['where'])}"]
    th = {}
    for key in ("lo", "hi"):
        if key in named:
            th[key], why = _per_channel(const_value(named[key]), tail, f"threshold {key}")
            if why:
                return [why]
            if th[key].dtype != np.int32:
                return [f"threshold {key} dtype {th[key].dtype}"]
    fields.update(epilogue="sign", out_dtype="int8", th_lo=th["lo"], th_hi=th.get("hi"))
    return []


def _read_pool(pool, fields) -> list[str]:
    a = pool.attrs
    p = [int(v) for v in a.pool_size]
    if (p[0] != p[1] or [int(v) for v in a.strides] != p or any(int(v) for v in a.padding)
            or any(int(v) != 1 for v in a.dilation) or bool(a.ceil_mode) or str(a.layout) != "NCHW"):
        return ["max pooling other than non-overlapping P x P (stride P, no padding, floor mode, NCHW)"]
    fields["pool"] = p[0]
    return []


def match_composite(func) -> dict[str, Any]:
    """The sub-pattern name -> expression map of a composite function made by the fusion."""
    from tvm import relax

    name = str(func.attrs["Composite"])
    pat, ann = pattern_table()[name]
    var2val = relax.analysis.get_var2val(func)
    body = func.body
    out = body.body if isinstance(body, relax.SeqExpr) else body
    out = var2val.get(out, out)
    matched = pat.extract_matched_expr(out, var2val)
    if matched is None:
        raise RuntimeError(f"composite {name} no longer matches its pattern")  # a bug of the fusion
    return {k: matched[p] for k, p in ann.items()}


def accumulating_op(expr) -> bool:
    """Whether ``expr`` is an int32 conv2d / matmul call (a layer, offloaded or not)."""
    import tvm
    from tvm import relax

    return (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in ACC_OPS.values()
            and str(expr.attrs.out_dtype) == "int32")


__all__ = ["ACC_OPS", "CODEGEN", "accumulating_op", "match_composite", "pattern_table", "read_layer"]
