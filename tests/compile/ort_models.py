"""Models quantized by onnxruntime's own tool, for the differential tests of the compiler.

A small float CNN (conv-relu-pool, conv-relu-pool, linear-relu, linear) is trained for one quick
epoch on real MNIST (seeded, deterministic), exported with ``torch.onnx.export``, and quantized
by ``onnxruntime.quantization``: ``quantize_static`` in QOperator and QDQ form (calibrated on
real MNIST training images) and ``quantize_dynamic``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from robustq_deploy.data import load_dataset


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 7 * 7, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def mnist_float(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("mnist", split).take(n)
    return ds.as_float(), ds.labels


def train_float_cnn(out: Path, n_train: int = 6000, seed: int = 0) -> Path:
    """Train SmallCNN one epoch on the first ``n_train`` MNIST images; write ``float.onnx``."""
    torch.manual_seed(seed)
    x, y = mnist_float("train", n_train)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(np.array(y))
    for i in range(0, n_train, 64):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64])
        loss.backward()
        opt.step()
    model.eval()
    path = out / "float.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    return path


class _Reader:
    """Calibration data: real MNIST training images, batch 1 (onnxruntime's reader protocol)."""

    def __init__(self, x: np.ndarray):
        self.items = iter([{"input": x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def quantize_all(float_path: Path, out: Path, n_calib: int = 200) -> dict[str, Path]:
    """QOperator and QDQ ``quantize_static`` (per channel, int8 weights, uint8 activations)
    and ``quantize_dynamic`` versions of the float model."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    x, _ = mnist_float("train", n_calib)
    paths = {}
    for fmt, name in ((QuantFormat.QOperator, "qoperator"), (QuantFormat.QDQ, "qdq")):
        paths[name] = out / f"static_{name}.onnx"
        quantize_static(str(float_path), str(paths[name]), _Reader(x), quant_format=fmt, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    paths["dynamic"] = out / "dynamic.onnx"
    quantize_dynamic(str(float_path), str(paths["dynamic"]), weight_type=QuantType.QInt8)
    for p in paths.values():
        onnx.checker.check_model(onnx.load(str(p)))
    return paths


def with_softmax_qoperator(float_path: Path, out: Path, n_calib: int = 100) -> Path:
    """The float model with a Softmax over its logits, quantized by ``quantize_static`` in
    QOperator form (onnxruntime writes the Softmax as com.microsoft QLinearSoftmax)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    m = onnx.load(str(float_path))
    logits = m.graph.output[0]
    m.graph.node.append(onnx.helper.make_node("Softmax", [logits.name], ["probs"], axis=-1, name="softmax"))
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(logits)
    probs.name = "probs"
    m.graph.output.pop()
    m.graph.output.append(probs)
    src = out / "float_softmax.onnx"
    onnx.save(m, str(src))
    x, _ = mnist_float("train", n_calib)
    path = out / "static_qoperator_softmax.onnx"
    quantize_static(str(src), str(path), _Reader(x), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


class DepthwiseBlock(nn.Module):
    """A MobileNetV2-style block on MNIST shapes: conv + ReLU6, depthwise stride-2 conv + ReLU6,
    pointwise projection, a residual pointwise conv + ReLU6 added to it, global average pooling,
    linear (seeded random weights: bit-exactness does not depend on training)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)
        self.pw2 = nn.Conv2d(24, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.clamp(self.conv(x), 0, 6)
        x = torch.clamp(self.dw(x), 0, 6)
        x = self.pw(x)
        x = x + torch.clamp(self.pw2(x), 0, 6)
        return self.fc(torch.flatten(torch.mean(x, dim=(2, 3), keepdim=True), 1))


DEPTHWISE_FORMS = {  # name: quantize_static options
    "qdq-u8-per-channel": {"quant_format": "QDQ", "per_channel": True, "activation_type": "QUInt8"},
    "qdq-u8-per-tensor-reduce-range": {"quant_format": "QDQ", "per_channel": False, "activation_type": "QUInt8",
                                       "reduce_range": True},
    "qdq-s8-symmetric": {"quant_format": "QDQ", "per_channel": True, "activation_type": "QInt8",
                         "extra_options": {"ActivationSymmetric": True}},
    "qoperator-u8-per-channel": {"quant_format": "QOperator", "per_channel": True, "activation_type": "QUInt8"},
}


def depthwise_qdq(out: Path, n_calib: int = 50, seed: int = 0, form: str = "qdq-u8-per-channel") -> Path:
    """:class:`DepthwiseBlock` quantized by onnxruntime's ``quantize_static`` in one of
    :data:`DEPTHWISE_FORMS` (int8 weights)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    torch.manual_seed(seed)
    model = DepthwiseBlock().eval()
    float_path, path = out / "dw_float.onnx", out / f"dw_{form}.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(float_path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=17, dynamo=False)
    x, _ = mnist_float("train", n_calib)
    opts = dict(DEPTHWISE_FORMS[form])
    opts["quant_format"] = getattr(QuantFormat, opts["quant_format"])
    opts["activation_type"] = getattr(QuantType, opts["activation_type"])
    quantize_static(str(float_path), str(path), _Reader(x), weight_type=QuantType.QInt8, **opts)
    return path
