"""A small, fast convolutional network for CPU demos and CPU experiments.

Modelled on the airbench CIFAR-10 speed-run networks (Keller Jordan): a conv stem and
three conv-pool-BN blocks, GELU activations, max-pooled features and a scaled linear
head. It trains to about 90% on CIFAR-10 in minutes on a GPU and in well under ten
minutes on a 2-core CPU (see the README's Performance section).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import CIFAR10_MEAN, CIFAR10_STD, ImageClassifier


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class FastNet(ImageClassifier):
    """``stem → block(w1) → block(w2) → block(w3) → global max-pool → linear``.

    ``widths`` is ``(stem, w1, w2, w3)``. The logits are scaled by ``logit_scale`` (1/9
    as in airbench), which lets the net train at high learning rates.
    """

    def __init__(self, num_classes: int = 10, *, widths: Sequence[int] = (32, 64, 128, 256),
                 logit_scale: float = 1 / 9, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__(mean, std)
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.GELU())
        self.block1 = ConvBlock(w0, w1)
        self.block2 = ConvBlock(w1, w2)
        self.block3 = ConvBlock(w2, w3)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(w3, num_classes, bias=False)
        self.logit_scale = float(logit_scale)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.block3(self.block2(self.block1(self.stem(x))))

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1)) * self.logit_scale

    def feature_layer(self) -> nn.Module:
        return self.block3

    def classifier_layer(self) -> nn.Linear:
        return self.fc
