"""Binary MNIST network: BatchNorm before every binary activation, no padding in binary layers.

Structure (28x28 input): conv3x3/p1(32, input pixels 8-bit) - bn - maxpool2 - sign -
conv3x3(64, valid) - bn - maxpool2 - sign - fc(256) - bn - sign - fc(classes).
``sign`` is the next layer's binary input quantizer. Deployment folds each BatchNorm + sign
into a per-channel threshold on the integer accumulator; max pooling commutes with the
(monotone) sign. Binary layers have no zero padding, so XNOR/popcount kernels need no pad
correction, and no bias (the BatchNorm shift takes its place).
Bit widths come from ``[quant]`` as usual; the intended setting is ``weight_bits = "binary"``,
``act_bits = "binary"`` with ``[quant.layers.conv1] weight_bits = 8``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import QuantConfig
from ..quant import QConv2d, QLinear, layer_spec
from .registry import first_layer_spec, register_model


class MnistBNN(nn.Module):
    def __init__(self, quant: QuantConfig, num_classes: int, input_shape):
        super().__init__()
        c, h, w = input_shape
        spec1, pixel = first_layer_spec(quant, "conv1")
        self.conv1 = QConv2d(c, 32, 3, spec1, padding=1, bias=False, in_fixed_scale=pixel)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = QConv2d(32, 64, 3, layer_spec(quant, "conv2"), padding=0, bias=False, in_signed=True)
        self.bn2 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2)
        h2, w2 = (h // 2 - 2) // 2, (w // 2 - 2) // 2
        self.fc1 = QLinear(64 * h2 * w2, 256, layer_spec(quant, "fc1"), bias=False, in_signed=True)
        self.bn3 = nn.BatchNorm1d(256)
        self.fc2 = QLinear(256, num_classes, layer_spec(quant, "fc2"), in_signed=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.bn1(self.conv1(x)))
        x = self.pool(self.bn2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.bn3(self.fc1(x))
        return self.fc2(x)


@register_model("mnist-bnn")
def mnist_bnn(quant: QuantConfig, num_classes: int, input_shape) -> nn.Module:
    return MnistBNN(quant, num_classes, input_shape)
