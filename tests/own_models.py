"""Ordinary float PyTorch models of the kind users bring, written as a user would (plain
``torch.nn``, BatchNorm, ``inplace=True``, ``x.view(x.size(0), -1)``), for the tests of
``[model] factory`` and :func:`robustq_deploy.quant.convert.quantize`. The tests name this file
as the factory (``tests/own_models.py:mobilenet_v2``), so it imports nothing from the tests.

* :class:`MobileNetV2Style`: conv-BN-ReLU6 stem, inverted residual blocks (1x1 expand - BN -
  ReLU6 - depthwise 3x3 - BN - ReLU6 - 1x1 project - BN, residual add when the shape allows),
  global average pooling, dropout, linear head (Sandler et al. 2018, scaled down);
* :class:`ResNetStyle`: conv-BN-ReLU stem, BasicBlocks (3x3 conv-BN-ReLU-3x3 conv-BN, identity
  or strided 1x1 conv-BN shortcut, ``out += shortcut``, ReLU), global average pooling, linear head
  (He et al. 2016, scaled down);
* :class:`Mixed`: the rest of what the quantizer covers (dilation, grouped conv, 'same'
  padding, hardtanh, clamp, concatenation, max and average pooling, ``view``);
* unsupported models: an LSTM, a GELU and a custom autograd function in one network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Style(nn.Module):
    # (expansion, blocks, stride of the first block) of each stage; its channels are ``widths``
    STAGES = ((1, 1, 1), (4, 2, 2), (4, 2, 2))

    def __init__(self, num_classes: int = 10, in_channels: int = 1, stem: int = 16, last: int = 96,
                 stem_stride: int = 1, widths: tuple[int, ...] = (16, 24, 32), dropout: float = 0.1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU6(inplace=True))
        blocks, cin = [], stem
        for (t, n, s), c in zip(self.STAGES, widths):
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.head(self.features(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNetStyle(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(BasicBlock(width, width, 1), BasicBlock(width, width, 1))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width, 1))
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


class Mixed(nn.Module):
    """Dilation, 'same' padding, grouped conv, hardtanh with a negative bound, clamp, cat, average
    pooling with and without padding, max pooling and ``x.view``; for 8x8 inputs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.dilated = nn.Conv2d(in_channels, 8, 3, padding=2, dilation=2)
        self.same = nn.Conv2d(in_channels, 8, 3, padding="same")
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.pool = nn.AvgPool2d(2)
        self.maxpool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, num_classes)

    def forward(self, x):
        y = torch.cat([F.hardtanh(self.dilated(x), -1.0, 1.0), torch.clamp(self.same(x), min=0.0, max=2.0)], dim=1)
        y = self.pool(F.relu6(self.grouped(y)))
        y = F.avg_pool2d(y, 3, stride=1, padding=1)
        y = self.maxpool(y)
        return self.fc(y.view(y.size(0), -1))


class Doubler(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


class Unsupported(nn.Module):
    """Three unsupported pieces in three places: an LSTM, a GELU, a custom autograd function."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.GELU()
        self.rnn = nn.LSTM(32, 16, batch_first=True)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = Doubler.apply(self.act(self.conv(x)))  # [N, 4, 8, 8]
        seq = x.flatten(2).transpose(1, 2).reshape(x.size(0), -1, 32)  # [N, 8, 32]
        out, _ = self.rnn(seq)
        return self.fc(out[:, -1])


def mobilenet_v2(num_classes: int = 10, in_channels: int = 1, stem: int = 16, last: int = 96,
                 stem_stride: int = 1, widths: tuple[int, ...] = (16, 24, 32)) -> nn.Module:
    return MobileNetV2Style(num_classes, in_channels, stem, last, stem_stride, tuple(widths))


def resnet(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    return ResNetStyle(num_classes, in_channels, width)


def unsupported(num_classes: int = 10) -> nn.Module:
    return Unsupported(num_classes)
