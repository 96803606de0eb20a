"""Small CNNs for 8x8 digits and 28x28 MNIST / Fashion-MNIST (any HxW divisible by 4)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import QuantConfig
from ..quant import QConv2d, QLinear, layer_spec
from .registry import first_layer_spec, register_model


class _ConvConvFC(nn.Module):
    """conv1 - relu - conv2 - relu - flatten - fc1 - relu - fc2, the layers set by a subclass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class DigitsCNN(_ConvConvFC):
    """conv3x3(16) - relu - conv3x3/2(32) - relu - fc(64) - relu - fc(classes), for 8x8 inputs."""

    def __init__(self, quant: QuantConfig, num_classes: int, input_shape):
        super().__init__()
        c, h, w = input_shape
        spec1, pixel = first_layer_spec(quant, "conv1")
        self.conv1 = QConv2d(c, 16, 3, spec1, padding=1, in_fixed_scale=pixel)
        self.conv2 = QConv2d(16, 32, 3, layer_spec(quant, "conv2"), stride=2, padding=1)
        self.fc1 = QLinear(32 * ((h + 1) // 2) * ((w + 1) // 2), 64, layer_spec(quant, "fc1"))
        self.fc2 = QLinear(64, num_classes, layer_spec(quant, "fc2"))


class MnistCNN(nn.Module):
    """conv3x3(32) - relu - maxpool2 - conv3x3(64) - relu - maxpool2 - fc(128) - relu - fc(classes)."""

    def __init__(self, quant: QuantConfig, num_classes: int, input_shape):
        super().__init__()
        c, h, w = input_shape
        spec1, pixel = first_layer_spec(quant, "conv1")
        self.conv1 = QConv2d(c, 32, 3, spec1, padding=1, in_fixed_scale=pixel)
        self.conv2 = QConv2d(32, 64, 3, layer_spec(quant, "conv2"), padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = QLinear(64 * (h // 4) * (w // 4), 128, layer_spec(quant, "fc1"))
        self.fc2 = QLinear(128, num_classes, layer_spec(quant, "fc2"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class SmallCNN(_ConvConvFC):
    """conv4x4/2(16) - relu - conv4x4/2(32) - relu - fc(100) - relu - fc(classes): the MNIST network
    of fast adversarial training (Wong, Rice and Kolter, ICLR 2020), ~0.6M MACs per 28x28 image
    (mnist-cnn: ~4.2M), for robust-training runs that a CPU affords on all training data."""

    def __init__(self, quant: QuantConfig, num_classes: int, input_shape):
        super().__init__()
        c, h, w = input_shape
        spec1, pixel = first_layer_spec(quant, "conv1")
        self.conv1 = QConv2d(c, 16, 4, spec1, stride=2, padding=1, in_fixed_scale=pixel)
        self.conv2 = QConv2d(16, 32, 4, layer_spec(quant, "conv2"), stride=2, padding=1)
        self.fc1 = QLinear(32 * (h // 4) * (w // 4), 100, layer_spec(quant, "fc1"))
        self.fc2 = QLinear(100, num_classes, layer_spec(quant, "fc2"))


@register_model("digits-cnn")
def digits_cnn(quant: QuantConfig, num_classes: int, input_shape) -> nn.Module:
    return DigitsCNN(quant, num_classes, input_shape)


@register_model("mnist-cnn")
def mnist_cnn(quant: QuantConfig, num_classes: int, input_shape) -> nn.Module:
    return MnistCNN(quant, num_classes, input_shape)


@register_model("mnist-small")
def mnist_small(quant: QuantConfig, num_classes: int, input_shape) -> nn.Module:
    return SmallCNN(quant, num_classes, input_shape)
