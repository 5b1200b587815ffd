"""VGG-16/19 with batch norm.

``features`` has torchvision's ``vgg16_bn``/``vgg19_bn`` layout and indices, so its
weights load from a torchvision checkpoint. The CIFAR head (default) pools the 512
final channels and has one linear layer; ``head="imagenet"`` is torchvision's
three-layer classifier over a 7×7 pooled map.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import CIFAR10_MEAN, CIFAR10_STD, ImageClassifier

CFGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(ImageClassifier):
    def __init__(self, cfg: Sequence[int | str], num_classes: int = 10, *, head: str = "cifar", width: float = 1.0,
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__(mean, std)
        layers: list[nn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = max(1, int(round(int(v) * width)))
                layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.head = head
        if head == "cifar":
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d(1)
            self.classifier: nn.Module = nn.Linear(c, num_classes)
        elif head == "imagenet":
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(
                nn.Linear(c * 49, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
                nn.Dropout(), nn.Linear(4096, num_classes))
        else:
            raise ValueError(f"head must be 'cifar' or 'imagenet', not {head!r}")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def feature_layer(self) -> nn.Module:
        return self.features

    def classifier_layer(self) -> nn.Linear:
        return self.classifier if isinstance(self.classifier, nn.Linear) else self.classifier[-1]


def vgg16(num_classes: int = 10, **kw) -> VGG:
    return VGG(CFGS["vgg16"], num_classes, **kw)


def vgg19(num_classes: int = 10, **kw) -> VGG:
    return VGG(CFGS["vgg19"], num_classes, **kw)
