"""ResNet-20-style network for 32x32 inputs (He et al. 2016, CIFAR variant), without BatchNorm.

conv3x3(16) - 3 stages x 3 basic blocks (16, 32, 64 channels; stride 2 at the first block of
stages 2 and 3, 1x1 projection shortcuts there) - global average pool - fc(classes).
BatchNorm is left out so every layer maps directly onto integer conv + requantization; residual
adds go through :class:`~robustq_deploy.quant.QAdd` (both inputs on one shared grid). Weights are
initialised with the last conv of each residual branch scaled down (as Fixup does), which keeps
the BN-free network trainable. Works for any input with H and W divisible by 4.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import QuantConfig
from ..quant import QAdd, QConv2d, QLinear, layer_spec
from .registry import first_layer_spec, register_model


class BasicBlock(nn.Module):
    def __init__(self, quant: QuantConfig, name: str, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = QConv2d(cin, cout, 3, layer_spec(quant, f"{name}.conv1"), stride=stride, padding=1)
        self.conv2 = QConv2d(cout, cout, 3, layer_spec(quant, f"{name}.conv2"), padding=1)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = QConv2d(cin, cout, 1, layer_spec(quant, f"{name}.shortcut"), stride=stride)
        self.add = QAdd(layer_spec(quant, f"{name}.add").act_bits)
        with torch.no_grad():
            self.conv2.weight.mul_(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x)))
        short = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.add(out, short))


class ResNet20(nn.Module):
    def __init__(self, quant: QuantConfig, num_classes: int, input_shape):
        super().__init__()
        c, _, _ = input_shape
        spec1, pixel = first_layer_spec(quant, "conv1")
        self.conv1 = QConv2d(c, 16, 3, spec1, padding=1, in_fixed_scale=pixel)
        blocks = []
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(3):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(quant, f"layers.{len(blocks)}", cin, cout, stride))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = QLinear(64, num_classes, layer_spec(quant, "fc"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.layers(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


@register_model("resnet20")
def resnet20(quant: QuantConfig, num_classes: int, input_shape) -> nn.Module:
    return ResNet20(quant, num_classes, input_shape)
