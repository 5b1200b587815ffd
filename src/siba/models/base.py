"""The base of every classifier: pixel-space input in ``[0,1]``, normalisation inside."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """Takes images in ``[0,1]`` and normalises them itself.

    ``mean``/``std`` are non-persistent buffers, so the ``state_dict`` holds exactly the
    network's weights (with torchvision's parameter names for ResNet and VGG) and
    triggers, budgets and gradients all live in pixel space.
    """

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_normalized(self.normalize(x))

    def feature_layer(self) -> nn.Module:
        """The last convolutional stage (for Grad-CAM and pruning defenses)."""
        raise NotImplementedError

    def classifier_layer(self) -> nn.Linear:
        """The final linear layer."""
        raise NotImplementedError
