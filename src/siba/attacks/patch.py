"""BadNets: a visible patch stamped on the image (the pipeline's positive control)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.dataset import ImageSet
from ..errors import SibaError
from .base import Attack, register_attack
from .trigger import BlendTrigger

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def checkerboard(size: int, channels: int = 3) -> torch.Tensor:
    """A ``size×size`` black-and-white checkerboard, white in the corners (C×size×size)."""
    idx = torch.arange(size)
    board = ((idx[:, None] + idx[None, :]) % 2 == 0).float()
    return board.expand(channels, size, size).clone()


@register_attack
class BadNets(Attack):
    """BadNets: a ``size×size`` checkerboard (or white) patch in a corner of every poisoned image."""

    name = "badnets"
    description = "visible 3×3 checkerboard patch in a corner (positive control)"

    def __init__(self, *, size: int = 3, pattern: str = "checkerboard", corner: str = "bottom-right", margin: int = 0,
                 target: int = 0, all_to_all: bool = False, seed: int = 0) -> None:
        super().__init__(target=target, all_to_all=all_to_all, seed=seed)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise SibaError(f"patch size must be a whole number ≥ 1, got {size!r}")
        if pattern not in ("checkerboard", "white"):
            raise SibaError(f"unknown patch pattern {pattern!r} (use checkerboard or white)")
        if corner not in CORNERS:
            raise SibaError(f"unknown corner {corner!r} (use {', '.join(CORNERS)})")
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise SibaError(f"margin must be a whole number of pixels ≥ 0, got {margin!r}")
        self.size, self.pattern, self.corner, self.margin = size, pattern, corner, margin

    def validate(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().validate(image_shape, num_classes)
        if self.size + self.margin > min(image_shape[1:]):
            raise SibaError(f"a {self.size}×{self.size} patch with margin {self.margin} does not fit "
                            f"{image_shape[1]}×{image_shape[2]} images")

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None) -> BlendTrigger:
        self.check_data(train_set, surrogate)  # nothing is optimised: ``checkpoint`` is not used
        c, h, w = train_set.image_shape
        s, m = self.size, self.margin
        patch = checkerboard(s, c) if self.pattern == "checkerboard" else torch.ones(c, s, s)
        top = h - s - m if self.corner.startswith("bottom") else m
        left = w - s - m if self.corner.endswith("right") else m
        pattern = torch.zeros(c, h, w)
        alpha = torch.zeros(h, w)
        pattern[:, top:top + s, left:left + s] = patch
        alpha[top:top + s, left:left + s] = 1.0
        return BlendTrigger(pattern, alpha, num_classes=train_set.num_classes, target=self.target,
                            target_rule=self.target_rule, meta=self._meta())
