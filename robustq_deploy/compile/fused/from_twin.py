"""A :class:`~.network.Network` of fused kernels from a trained PyTorch twin.

The twin is traced (quantized layers as leaves, as the exporters do) and every quantized layer,
with the ReLU, max pooling, BatchNorm and residual add that follow it, goes to the
:class:`~.builder.NetworkBuilder`; the multipliers come from the layers' scales (``robustq
compile`` builds the same network from the ONNX export instead, :mod:`.from_onnx`, with the
file's own multipliers). Used by ``bench/latency.py`` and the kernel tests.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import UnsupportedError
from ...export.registry import _FLATTEN, _MAXPOOL, _RELU, node_key, trace
from ...kernels.registry import KernelContext
from ...quant import QAdd, QConv2d, QLinear
from .builder import FusedGrid, LayerOp, NetworkBuilder, Value, finish
from .network import Network


def layer_op(name: str, m) -> LayerOp:
    """The :class:`LayerOp` of a quantized twin layer (refusing what the kernels lack)."""
    p = m.integer_params()
    w = p["weight"].astype(np.int64)
    bias = None if p["bias"] is None else p["bias"].astype(np.int64)
    acc_scale = np.broadcast_to(p["bias_scale"].astype(np.float32), (w.shape[0],)).copy()
    if not isinstance(m, QConv2d):
        return LayerOp("dense", w, bias, acc_scale)
    if m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1] or m.groups != 1 or m.dilation != (1, 1):
        raise UnsupportedError(f"{name}: only square stride/padding, no groups or dilation")
    return LayerOp("conv", w, bias, acc_scale, m.stride[0], m.padding[0])


def walk(b: NetworkBuilder, model: nn.Module) -> Value:
    """Walk the traced twin, adding its layers to ``b``; returns the output value."""
    gm = trace(model.eval())
    vals: dict[str, Value] = {}
    out = None
    for node in gm.graph.nodes:
        key = node_key(gm, node)
        if any(isinstance(a, torch.fx.Node) and a.name not in vals for a in node.args):
            continue  # an input was refused already (reported once, in b.problems)
        args = [vals[a.name] for a in node.args if isinstance(a, torch.fx.Node)]
        if node.op == "placeholder":
            vals[node.name] = Value("input", shape=tuple(model.input_shape))
        elif node.op == "output":
            out = args[0]
        elif node.op == "call_module" and isinstance(gm.get_submodule(node.target), (QConv2d, QLinear)):
            m = gm.get_submodule(node.target)
            if not m.quantized:
                b.problems.append(f"{node.target}: float layer")
                continue
            vals[node.name] = b.layer(node.target, layer_op(node.target, m), FusedGrid.of(m.integer_params()["input"]),
                                      args[0])
        elif key in _RELU or (isinstance(key, type) and issubclass(key, nn.ReLU)):
            vals[node.name] = b.modify(args[0], ("relu",), node.name)
        elif key in _MAXPOOL or (isinstance(key, type) and issubclass(key, nn.MaxPool2d)):
            m = gm.get_submodule(node.target) if node.op == "call_module" else None
            k = m.kernel_size if m else node.args[1]
            st = (m.stride if m else node.kwargs.get("stride")) or k
            k, st = (k if isinstance(k, int) else k[0]), (st if isinstance(st, int) else st[0])
            if k != st or (m and (m.padding not in (0, (0, 0)) or m.ceil_mode)):
                b.problems.append(f"{node.name}: max pooling must have stride == kernel and no padding")
                continue
            v = b.modify(args[0], ("pool", k), node.name)
            c, h, w = v.shape
            vals[node.name] = Value(v.kind, v.layer, (c, h // k, w // k))
        elif isinstance(key, type) and issubclass(key, nn.modules.batchnorm._BatchNorm):
            vals[node.name] = b.modify(args[0], ("bn", gm.get_submodule(node.target)), node.name)
        elif key in _FLATTEN or (isinstance(key, type) and issubclass(key, nn.Flatten)):
            v = args[0]
            feats = int(np.prod(v.shape))
            vals[node.name] = Value("flat", None, (feats,), src=v)
        elif isinstance(key, type) and issubclass(key, QAdd):
            vals[node.name] = _add(b, node.target, gm.get_submodule(node.target), args)
        elif isinstance(key, type) and issubclass(key, nn.AdaptiveAvgPool2d):
            m = gm.get_submodule(node.target)
            if m.output_size not in (1, (1, 1)):
                b.problems.append(f"{node.target}: only global average pooling")
                continue
            c = args[0].shape[0]
            vals[node.name] = Value("gap", None, (c, 1, 1), src=args[0])
        else:
            b.problems.append(f"{node.name}: {getattr(key, '__name__', key)} is not supported by the kernels")
    if b.problems:
        raise UnsupportedError("cannot build kernels for this model: " + "; ".join(b.problems))
    return out


def _add(b: NetworkBuilder, name: str, m: QAdd, args: list[Value]) -> Value:
    grid = FusedGrid.of(m.in_q.qparams())
    return b.fuse_residual(name, (args[0], grid), (args[1], grid))


def from_twin(model: nn.Module, target) -> Network:
    """The kernel network of a quantized twin for ``target`` (a ``tvm.target.Target``)."""
    b = NetworkBuilder(tuple(model.input_shape), KernelContext.for_target(target))
    return finish(b, walk(b, model), getattr(model, "arch", "model"))


__all__ = ["from_twin", "layer_op"]
