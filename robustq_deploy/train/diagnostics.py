"""Why robust quantization needs care: per-layer error amplification and Lipschitz constants.

* :func:`error_amplification` ``(model, x, delta) -> [{layer, ratio}]``
  (:mod:`robustq_deploy.quant.analysis`, which verify's report uses too): for every conv / linear
  layer ``l`` (its output, before the activation), ``mean_i ||f_l(x_i + delta_i) - f_l(x_i)|| /
  ||delta_i||``. Quantized layers round small input changes to whole steps, so their ratios grow
  with depth faster than a float model's (Lin et al. 2019's "error amplification effect").
* :func:`operator_norm` / :func:`layer_lipschitz`: the spectral norm of each layer's linear map
  (a conv with its stride and padding, through ``conv2d`` / ``conv_transpose2d``; a linear layer's
  matrix) by power iteration, of the float or the quantized weights.
* :func:`diagnose`: both for one model with its own one-step adversarial perturbation
  (``eps * sign(grad)``), the record stored in the training metrics; :func:`plot_diagnostics`
  draws several such records (float / quantized / DQ) into one PNG.

The functions take plain modules and tensors, so reports (verify's HTML) can call them directly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..manifest import atomic_path
from ..quant import QConv2d, primitives as P, quant_layers
from ..quant.analysis import capture as _capture, error_amplification  # noqa: F401  (error_amplification: re-exported)
from .adversary import attack_mode, input_grad
from .distributed import unwrap

POWER_ITERS = 50


def _layer_weight(layer: nn.Module, quantized: bool) -> torch.Tensor:
    if quantized and layer.w_q.enabled:
        levels, scale = layer.w_q.levels_and_scale(layer.weight)
        return P.dequantize(levels, P.channel_view(scale, levels.ndim))
    return layer.weight.detach()


@torch.no_grad()
def operator_norm(layer: nn.Module, input_shape: tuple[int, ...], weight: torch.Tensor | None = None,
                  iters: int = POWER_ITERS, seed: int = 0) -> float:
    """Largest singular value of the layer's linear map (no bias) on inputs of ``input_shape``
    (one example, no batch dimension), by power iteration on ``A^T A``."""
    w = layer.weight.detach() if weight is None else weight
    if isinstance(layer, QConv2d):
        def fwd(v):
            return F.conv2d(v, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)

        out_shape = fwd(torch.zeros((1,) + tuple(input_shape), dtype=w.dtype, device=w.device)).shape
        # output_padding recovers input sizes that a strided conv maps to the same output size
        extra = [input_shape[-2 + i] - ((out_shape[-2 + i] - 1) * layer.stride[i] - 2 * layer.padding[i]
                                         + layer.dilation[i] * (w.shape[-2 + i] - 1) + 1) for i in range(2)]

        def adj(u):
            return F.conv_transpose2d(u, w, None, layer.stride, layer.padding, tuple(extra), layer.groups, layer.dilation)
    else:
        def fwd(v):
            return v @ w.T

        def adj(u):
            return u @ w
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1,) + tuple(input_shape), generator=gen, dtype=w.dtype).to(w.device)
    v = v / v.norm()
    for _ in range(iters):
        v = adj(fwd(v))
        n = v.norm()
        if float(n) == 0.0:  # an all-zero weight
            return 0.0
        v = v / n
    return float(fwd(v).norm())


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every conv / linear layer (eval mode) for a batch ``x``."""
    with attack_mode(model) as net:
        return _capture(net, x, "input")


def layer_lipschitz(model: nn.Module, sample: torch.Tensor, quantized: bool = True) -> list[dict[str, Any]]:
    """Spectral norm of every conv / linear layer (of its quantized weights if ``quantized``)."""
    shapes = {name: tuple(t.shape[1:]) for name, t in layer_inputs(model, sample[:1]).items()}
    return [{"layer": name, "lipschitz": operator_norm(layer, shapes[name], _layer_weight(layer, quantized))}
            for name, layer in quant_layers(unwrap(model))]


def diagnose(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    """Error amplification under the model's own one-step perturbation ``eps * sign(grad)``
    and per-layer Lipschitz constants (quantized weights); the training-metrics record."""
    with attack_mode(model) as net:
        delta = eps * input_grad(net, x, y).sign()
    amp = error_amplification(model, x, delta)
    lip = {r["layer"]: r["lipschitz"] for r in layer_lipschitz(model, x)}
    return {"eps": eps, "n": len(x),
            "layers": [{"layer": r["layer"], "ratio": r["ratio"], "lipschitz": lip[r["layer"]]} for r in amp]}


def plot_diagnostics(records: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One PNG: error amplification (left) and Lipschitz constants (right) per layer, one line per
    labelled model (e.g. ``{"float": diagnose(...), "int4": ..., "int4 + DQ": ...}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, rec in records.items():
        names = [r["layer"] for r in rec["layers"]]
        axes[0].plot(names, [r["ratio"] for r in rec["layers"]], marker="o", label=label)
        axes[1].plot(names, [r["lipschitz"] for r in rec["layers"]], marker="o", label=label)
    axes[0].set_title("error amplification ||f_l(x+d) - f_l(x)|| / ||d||")
    axes[1].set_title("layer Lipschitz constant (spectral norm)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.tick_params(axis="x", rotation=45)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return out
