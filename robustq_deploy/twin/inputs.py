"""What a model's input is: layout, element type and the scale of its pixels.

Datasets hold images as uint8 pixels ``[N, C, H, W]``; attacks work on float images in [0, 1]
in that layout. A deployed model may want them otherwise: uint8 pixels, floats in [0, 1] or in
[0, 255], channels last, or flattened. :class:`InputSpec` records that, read from the ONNX graph
(:func:`input_spec`), and converts a batch once, in one place, for the twin (differentiably) and
for the deployed engines (on the uint8 pixel grid). :meth:`InputSpec.check` compares it with a
dataset's image shape and raises a one-line :class:`~robustq_deploy.errors.InputError` when they
cannot match.

The pixel scale of a float input is taken from the graph: the scale of the ``QuantizeLinear``
that reads the input (``1/255``: inputs in [0, 1]; ``1``: inputs in [0, 255]); a float model with
no such quantizer is assumed to take [0, 1]. ``input_range`` overrides it ("unit" or "pixels").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..dtypes import dtype
from ..errors import InputError, UnsupportedError

PIXEL_LEVELS = 255
LAYOUTS = ("NCHW", "NHWC", "NHW", "NF")  # NF: flattened [N, C*H*W] in C, H, W order
RANGES = {"unit": 1.0 / PIXEL_LEVELS, "pixels": 1.0}
_DTYPES = {dtype(n).onnx: n for n in ("float32", "uint8")}  # the input types an image model may take


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str  # "float32" or "uint8"
    layout: str  # one of LAYOUTS
    dims: tuple[int | None, ...]  # the model's input shape after the batch dimension (None: symbolic)
    pixel_scale: float = 1.0 / PIXEL_LEVELS  # value fed for pixel p of a float input: p * pixel_scale

    @property
    def range_name(self) -> str:
        return "uint8 pixels" if self.dtype == "uint8" else ("[0, 1]" if self.pixel_scale < 0.5 else "[0, 255]")

    def describe(self) -> str:
        shown = ",".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name}: {self.dtype} {self.layout} [N,{shown}], {self.range_name}"

    def check(self, chw: tuple[int, int, int], data_name: str) -> None:
        """Raise InputError if images of shape ``chw`` (C, H, W) cannot be fed to this input."""
        c, h, w = chw
        want = {"NCHW": (c, h, w), "NHWC": (h, w, c), "NHW": (h, w) if c == 1 else None,
                "NF": (c * h * w,)}[self.layout]
        if want is None or len(want) != len(self.dims) or any(d is not None and d != g for d, g in zip(self.dims, want)):
            shown = ",".join("?" if d is None else str(d) for d in self.dims)
            raise InputError(f"{data_name} images are {c}x{h}x{w} (CxHxW) but the model's input {self.name!r} is "
                             f"{self.layout} [N,{shown}]")

    def arrange(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> the model's layout (no scaling)."""
        if self.layout == "NHWC":
            return x.permute(0, 2, 3, 1)
        if self.layout == "NHW":
            return x[:, 0]
        if self.layout == "NF":
            return x.reshape(x.shape[0], -1)
        return x

    def feed(self, x: torch.Tensor) -> np.ndarray:
        """Float images in [0, 1] -> the array a deployed engine receives, on the uint8 pixel grid."""
        pixels = np.clip(np.rint(self.arrange(x.detach()).cpu().numpy().astype(np.float64) * PIXEL_LEVELS),
                         0, PIXEL_LEVELS)
        if self.dtype == "uint8":
            return np.ascontiguousarray(pixels.astype(np.uint8))
        return np.ascontiguousarray((pixels * self.pixel_scale).astype(np.float32))


def _layout(dims: list[int | None]) -> str:
    if len(dims) == 3:
        c_first, c_last = dims[0] in (1, 3), dims[2] in (1, 3)
        return "NHWC" if c_last and not c_first else "NCHW"
    return {2: "NHW", 1: "NF"}.get(len(dims), "")


def _input_quant_scale(model: onnx.ModelProto, name: str) -> float | None:
    consts = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input and node.input[0] == name and node.input[1] in consts:
            s = numpy_helper.to_array(consts[node.input[1]])
            if s.size == 1:
                return float(s.reshape(()))
    return None


def input_spec(model: onnx.ModelProto, input_range: str = "auto") -> InputSpec:
    """The input of ``model`` (one image input; see the module docstring)."""
    inits = {i.name for i in model.graph.initializer}
    ins = [v for v in model.graph.input if v.name not in inits]
    if len(ins) != 1:
        raise UnsupportedError(f"verify needs a model with one input, this one has {[v.name for v in ins]}")
    v = ins[0]
    tt = v.type.tensor_type
    if tt.elem_type not in _DTYPES:
        raise UnsupportedError(f"input {v.name!r} has ONNX element type {tt.elem_type}; an image input is float32 or uint8")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim][1:]
    layout = _layout(dims)
    if not layout:
        raise UnsupportedError(f"input {v.name!r} has rank {len(dims) + 1}; an image input is [N,C,H,W], [N,H,W,C], "
                               "[N,H,W] or [N,features]")
    if input_range not in ("auto", *RANGES):
        raise UnsupportedError(f"input range {input_range!r}: choose auto, unit or pixels")
    scale = 1.0
    if _DTYPES[tt.elem_type] == "float32":
        if input_range != "auto":
            scale = RANGES[input_range]
        else:
            s = _input_quant_scale(model, v.name)
            scale = RANGES["pixels"] if s is not None and 0.5 <= s * 1.0 <= 2.0 else RANGES["unit"]
    return InputSpec(v.name, _DTYPES[tt.elem_type], layout, tuple(dims), scale)


__all__ = ["InputSpec", "LAYOUTS", "PIXEL_LEVELS", "RANGES", "input_spec"]
