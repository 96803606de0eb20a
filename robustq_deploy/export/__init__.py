"""ONNX export of trained twins: ``export_model`` (model -> ModelProto) and the export stage.

Forms (``robustq export --format``), each a registry of handlers (:mod:`.registry`):

* ``qdq`` (:mod:`.qdq`): QuantizeLinear/DequantizeLinear around float ops;
* ``integer`` (:mod:`.integer`): integer-only standard ops with fixed-point requantization;
* ``qoperator`` (:mod:`.qoperator`): QLinearConv / QLinearMatMul where they fit, else ``integer``;
* ``packed`` (:mod:`.packed`): ``integer`` with binary/ternary layers as bit-packed ``ai.robustq``
  operators (:mod:`.robustq_ops`).

The integer forms share :mod:`.lowering`; the numpy reference interpreter that defines their
semantics is :mod:`.reference`. Export is deterministic: the same checkpoint and options give
the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..config import ExportConfig, to_dict
from ..errors import ArtifactError, ConfigError
from ..manifest import Artifact, atomic_write_bytes, ensure_writable, publishing
from ..quant import quant_layers
from . import integer, packed, qdq, qoperator  # noqa: F401  (register the handlers)
from .graph import GraphBuilder
from .registry import ExportContext, export_formats, export_opsets, run_handlers, scan, trace
from .robustq_ops import packed_weight_bytes


def export_model(model: nn.Module, fmt: str = "qdq", opset: int = 21) -> onnx.ModelProto:
    """Trace ``model`` and emit it in ``fmt``; refuses unsupported modules before emitting."""
    if fmt not in export_formats():
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(export_formats())}")
    model = model.eval()
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(f"the model holds non-finite values (NaN or infinity) in {', '.join(bad[:5])}"
                            f"{' and more' if len(bad) > 5 else ''}; refusing to export it")
    gm = trace(model)
    scan(gm, fmt, opset)
    ctx = ExportContext(gm, GraphBuilder(f"{getattr(model, 'arch', 'model')}_{fmt}"), fmt, opset, model.input_shape)
    ctx.shapes = node_shapes(gm, model.input_shape)
    run_handlers(ctx)
    m = ctx.b.build(opset, doc=f"robustq-deploy {fmt} export of {getattr(model, 'arch', 'model')}")
    onnx.checker.check_model(m, full_check=True)
    bad = [t.name for t in m.graph.initializer
           if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
           and not np.isfinite(onnx.numpy_helper.to_array(t)).all()]
    if bad:
        raise ArtifactError(f"export computed non-finite values (NaN or infinity) for {', '.join(bad[:5])}; "
                            "refusing to write them")
    return m


@torch.no_grad()
def node_shapes(gm, input_shape) -> dict[str, tuple[int, ...]]:
    """Output shape (batch 1) of every traced node, for handlers that need static sizes."""
    ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    return {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes
            if isinstance(n.meta.get("tensor_meta"), TensorMetadata)}


def _weight_kind(bits) -> str:
    return {32: "float", 8: "int8", 4: "int4", 2: "int2"}.get(bits, str(bits))


def _weight_bytes(bits, shape: tuple[int, ...]) -> int:
    """Bytes of a weight tensor stored at its bit width: binary / ternary rows packed as the
    ``packed`` form writes them, int4 two per byte, float32 four bytes."""
    m, k = shape[0], int(np.prod(shape[1:]))
    if bits in ("binary", "ternary"):
        return packed_weight_bytes(bits, m, k)
    return (m * k * (32 if bits == 32 else int(bits)) + 7) // 8


def model_size(model: nn.Module, onnx_model: onnx.ModelProto | None = None) -> dict[str, Any]:
    """Weight storage in bytes: float32 vs the quantized form.

    Per layer: ``float_bytes`` (float32 weights + bias), ``quantized_bytes`` (weights at their bit
    width + int32 bias + float32 scales), and the weight tensor alone (``float_weight_bytes``,
    ``weight_bytes``). ``by_kind`` totals weight bytes per kind (float, int8, int4, ternary,
    binary) with the float32 bytes of the same layers. With ``onnx_model``, the bytes its
    initializers actually take are added (``onnx_initializer_bytes``).
    """
    layers = []
    for name, layer in quant_layers(model):
        weight, bias = layer.weight_and_bias()
        n_w = weight.numel()
        n_b = bias.numel() if bias is not None else 0
        bits = layer.w_q.bits if layer.quantized else 32
        w_bytes = _weight_bytes(bits, tuple(layer.weight.shape))
        n_scales = (layer.weight.shape[0] if layer.w_q.per_channel else 1) if layer.quantized else 0
        q_bytes = w_bytes + 4 * n_b + 4 * n_scales
        layers.append({"layer": name, "weight_bits": bits, "float_bytes": 4 * (n_w + n_b), "quantized_bytes": q_bytes,
                       "float_weight_bytes": 4 * n_w, "weight_bytes": w_bytes})
    by_kind: dict[str, dict[str, int]] = {}
    for r in layers:
        k = by_kind.setdefault(_weight_kind(r["weight_bits"]), {"layers": 0, "float_weight_bytes": 0, "weight_bytes": 0})
        k["layers"] += 1
        k["float_weight_bytes"] += r["float_weight_bytes"]
        k["weight_bytes"] += r["weight_bytes"]
    out: dict[str, Any] = {"float_bytes": sum(r["float_bytes"] for r in layers),
                           "quantized_bytes": sum(r["quantized_bytes"] for r in layers),
                           "by_kind": dict(sorted(by_kind.items())), "layers": layers}
    if onnx_model is not None:
        out["onnx_initializer_bytes"] = sum(len(i.raw_data) or len(i.SerializeToString()) for i in onnx_model.graph.initializer)
    return out


def io_signature(m: onnx.ModelProto) -> dict[str, Any]:
    """Names, shapes (None for symbolic) and dtypes of a model's inputs and outputs."""
    def desc(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)))}
    init = {i.name for i in m.graph.initializer}
    return {"inputs": [desc(v) for v in m.graph.input if v.name not in init], "outputs": [desc(v) for v in m.graph.output]}


def export_stage(checkpoint: str | Path, cfg: ExportConfig, out_dir: str | Path, model: str | nn.Module | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> Artifact:
    """Stage 2: checkpoint -> ``out_dir/model.<format>.onnx`` recorded in the manifest.

    ``model`` (with ``model_kwargs``): the factory reference or float module a checkpoint of the
    user's own model is rebuilt from (:func:`robustq_deploy.train.read_checkpoint`)."""
    from ..checkpoint import load_checkpoint

    out = ensure_writable(out_dir, create=False)
    model, run_cfg, parent = load_checkpoint(checkpoint, model, model_kwargs)
    m = export_model(model, cfg.format, cfg.opset)
    path = out / f"model.{cfg.format}.onnx"
    meta = {"format": cfg.format, "opset": cfg.opset, "size": model_size(model, m), **io_signature(m)}
    with publishing(out) as pub:
        atomic_write_bytes(path, m.SerializeToString(deterministic=True))
        pub.record(path, "onnx", "export", parents=[parent], config=to_dict(cfg), meta=meta)
    return pub.artifacts[path]


__all__ = ["export_formats", "export_model", "export_opsets", "export_stage", "io_signature", "model_size", "node_shapes"]
