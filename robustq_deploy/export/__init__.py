"""ONNX export of trained twins: ``export_model`` (model -> ModelProto) and the export stage.

Formats are registries of handlers (:mod:`.registry`); ``qdq`` lives in :mod:`.qdq`.
Export is deterministic: the same checkpoint and options give the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import nn

from ..config import ExportConfig, to_dict
from ..errors import ConfigError
from ..manifest import Artifact, Manifest, atomic_write_bytes
from ..quant import quant_layers, weight_storage_bits
from . import qdq  # noqa: F401  (registers the qdq handlers)
from .graph import GraphBuilder
from .registry import ExportContext, export_formats, run_handlers, scan, trace


def export_model(model: nn.Module, fmt: str = "qdq", opset: int = 21) -> onnx.ModelProto:
    """Trace ``model`` and emit it in ``fmt``; refuses unsupported modules before emitting."""
    if fmt not in export_formats():
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(export_formats())}")
    model = model.eval()
    gm = trace(model)
    scan(gm, fmt, opset)
    ctx = ExportContext(gm, GraphBuilder(f"{getattr(model, 'arch', 'model')}_{fmt}"), fmt, opset, model.input_shape)
    run_handlers(ctx)
    m = ctx.b.build(opset, doc=f"robustq-deploy {fmt} export of {getattr(model, 'arch', 'model')}")
    onnx.checker.check_model(m, full_check=True)
    return m


def model_size(model: nn.Module) -> dict[str, Any]:
    """Weight storage in bytes: float32 vs the quantized form (packed to the weight bit width,
    int32 biases and float32 scales included)."""
    layers = []
    for name, layer in quant_layers(model):
        n_w = layer.weight.numel()
        n_b = layer.bias.numel() if layer.bias is not None else 0
        float_bytes = 4 * (n_w + n_b)
        if layer.quantized:
            bits = weight_storage_bits(layer.w_q.bits)
            n_scales = layer.weight.shape[0] if layer.w_q.per_channel else 1
            q_bytes = (n_w * bits + 7) // 8 + 4 * n_b + 4 * n_scales
        else:
            bits, q_bytes = 32, float_bytes
        layers.append({"layer": name, "weight_bits": layer.w_q.bits if layer.quantized else 32,
                       "float_bytes": float_bytes, "quantized_bytes": q_bytes})
    return {"float_bytes": sum(r["float_bytes"] for r in layers),
            "quantized_bytes": sum(r["quantized_bytes"] for r in layers), "layers": layers}


def io_signature(m: onnx.ModelProto) -> dict[str, Any]:
    """Names, shapes (None for symbolic) and dtypes of a model's inputs and outputs."""
    def desc(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)))}
    init = {i.name for i in m.graph.initializer}
    return {"inputs": [desc(v) for v in m.graph.input if v.name not in init], "outputs": [desc(v) for v in m.graph.output]}


def export_stage(checkpoint: str | Path, cfg: ExportConfig, out_dir: str | Path) -> Artifact:
    """Stage 2: checkpoint -> ``out_dir/model.<format>.onnx`` recorded in the manifest."""
    from ..train import load_checkpoint

    model, run_cfg, parent = load_checkpoint(checkpoint)
    m = export_model(model, cfg.format, cfg.opset)
    path = Path(out_dir) / f"model.{cfg.format}.onnx"
    atomic_write_bytes(path, m.SerializeToString(deterministic=True))
    meta = {"format": cfg.format, "opset": cfg.opset, "size": model_size(model), **io_signature(m)}
    return Manifest.load(out_dir).add(path, "onnx", "export", parents=[parent], config=to_dict(cfg), meta=meta)


__all__ = ["export_formats", "export_model", "export_stage", "io_signature", "model_size"]
