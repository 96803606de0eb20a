"""What a verification report says about the model and its numbers, beyond the accuracies:

* :func:`graph_summary`: the ONNX graph at a glance (producer, opsets, form, op counts, integer
  widths of weights and activations, parameter count, input);
* :func:`wilson`: the 95% confidence interval of an accuracy measured on ``n`` points (Wilson
  score interval, sound at 0 and 1 where the normal approximation is not);
* :func:`example_images`: clean, adversarial and difference images of a few points each engine
  lost, as small base64 PNGs for the HTML page.
"""
from __future__ import annotations

import base64
import collections
import io
import math
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper

from ..dtypes import DTYPES

_LINEAR = {"Conv", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm"}
_TYPE_NAMES = {d.onnx: name for name, d in DTYPES.items()}


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of ``k`` successes in ``n`` trials, as [low, high]."""
    if n <= 0:
        return [0.0, 1.0]
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [max(0.0, mid - half), min(1.0, mid + half)]


def _form(ops: collections.Counter) -> str:
    if any(d == "ai.robustq" for d, _ in ops):
        return "packed (ai.robustq bit-packed layers)"
    names = {o for _, o in ops}
    if "DynamicQuantizeLinear" in names:
        return "dynamic quantization (onnxruntime quantize_dynamic)"
    if names & {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd"}:
        return "QOperator (QLinear* ops)"
    if names & {"ConvInteger", "MatMulInteger"}:
        return "integer (ConvInteger / MatMulInteger with requantization)"
    if "QuantizeLinear" in names and names & {"Conv", "Gemm", "MatMul"}:
        return "QDQ (QuantizeLinear / DequantizeLinear around float ops)"
    return "float"


def graph_summary(model: onnx.ModelProto) -> dict[str, Any]:
    g = model.graph
    ops = collections.Counter((n.domain if n.domain != "ai.onnx" else "", n.op_type) for n in g.node)
    inits = {i.name: i for i in g.initializer}
    weights, acts = set(), set()
    for n in g.node:
        if n.op_type in _LINEAR and len(n.input) > 1:
            w_in = n.input[3] if n.op_type in ("QLinearConv", "QLinearMatMul", "QGemm") else n.input[1]
            if w_in in inits:
                weights.add(_TYPE_NAMES.get(inits[w_in].data_type, str(inits[w_in].data_type)))
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            acts.add(_TYPE_NAMES.get(inits[n.input[2]].data_type, str(inits[n.input[2]].data_type)))
        if n.domain == "ai.robustq":
            weights.add("binary" if n.op_type.startswith("Binary") else "ternary")
    # QDQ graphs hold weights (and int32 biases) as initializers behind a DequantizeLinear
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type != TensorProto.INT32:
            weights.add(_TYPE_NAMES.get(inits[n.input[0]].data_type, str(inits[n.input[0]].data_type)))
    params = int(sum(int(np.prod(numpy_helper.to_array(i).shape)) for i in g.initializer))
    return {
        "producer": f"{model.producer_name} {model.producer_version}".strip() or "unknown",
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "form": _form(ops),
        "ops": {(f"{d}::{o}" if d else o): c for (d, o), c in sorted(ops.items())},
        "nodes": len(g.node),
        "parameters": params,
        "bits": {"weights": sorted(weights), "activations": sorted(acts)},
    }


def _png(img: np.ndarray) -> str:
    """An image ``[C, H, W]`` in [0, 1] (or [-1, 1] for a difference) as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(img, np.float64)
    a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    buf = io.BytesIO()
    kw = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if a.ndim == 2 else {}
    plt.imsave(buf, np.clip(a, 0, 1), format="png", metadata={"Software": None}, **kw)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def example_images(x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, clean_pred: torch.Tensor,
                   adv_pred: torch.Tensor, rows: list[int], eps: float) -> list[dict[str, Any]]:
    """Per point in ``rows``: label, predictions, L-inf distance and three PNGs (clean,
    adversarial, difference scaled so +-eps spans the grey range)."""
    out = []
    for i in rows:
        d = (x_adv[i] - x[i]).numpy()
        out.append({"index": int(i), "label": int(y[i]), "clean_pred": int(clean_pred[i]), "adv_pred": int(adv_pred[i]),
                    "linf": float(np.abs(d).max()), "clean_png": _png(x[i].numpy()),
                    "adv_png": _png(x_adv[i].numpy()), "diff_png": _png(0.5 + d / (2 * max(eps, 1e-12)))})
    return out


__all__ = ["example_images", "graph_summary", "wilson"]
