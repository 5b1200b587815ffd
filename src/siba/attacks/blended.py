"""Blended (Chen et al. 2017): ``x' = (1−α)·x + α·p``, a whole-image pattern blended in.

The pattern ``p`` is an image file the user names (resized to the data), by default a
photograph shipped with siba — scikit-image's ``chelsea.png`` (Stefan van der Walt, CC0),
centre-cropped to 128×128 (``scripts/make_blend_pattern.py``) — since the Hello-Kitty image of
the original code may not be redistributed; or seeded uniform noise (``pattern: noise``, as the
paper does for VGGFace2). With ``α = 0.2`` (the default) a pixel changes by at most 0.2, which is
the paper's Table I L∞ of 0.19 up to the pattern's contrast.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.dataset import ImageSet
from ..errors import SibaError
from .base import Attack, register_attack
from .sparse import parse_number
from .trigger import BlendTrigger

PATTERNS = ("image", "noise")


def default_pattern_file() -> Path:
    """The shipped default pattern (CC0 photograph, 128×128 PNG)."""
    return Path(str(resources.files("siba.attacks") / "assets" / "chelsea-128.png"))


def read_pattern(path: str | Path, channels: int, height: int, width: int) -> torch.Tensor:
    """An image file as a float ``C×H×W`` pattern in ``[0, 1]``, resized (bilinear) to ``H×W``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            im = im.resize((width, height), Image.BILINEAR)
            arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())
    except FileNotFoundError:
        raise SibaError(f"blend pattern image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise SibaError(f"{path} is not an image file the blend pattern can be read from: {exc}") from None
    if channels == 3:
        return arr.permute(2, 0, 1).contiguous() / 255
    if channels == 1:
        return arr.view(1, height, width) / 255
    raise SibaError(f"a blend pattern image fits 1- or 3-channel data, not {channels} channels")


@register_attack
class Blended(Attack):
    """Blended: a pattern (an image file, or seeded noise) blended into the whole image with opacity α."""

    name = "blended"
    description = "whole-image pattern blended in, x' = (1-alpha) x + alpha p (alpha 0.2; a photograph or noise)"

    def __init__(self, *, alpha: float | str = 0.2, pattern: str = "image", image: str | None = None,
                 target: int = 0, all_to_all: bool = False, seed: int = 0) -> None:
        super().__init__(target=target, all_to_all=all_to_all, seed=seed)
        self.alpha = parse_number(alpha, "alpha")
        if not 0 < self.alpha <= 1:
            raise SibaError(f"the blend opacity alpha must be in (0, 1], got {self.alpha:g}")
        if pattern not in PATTERNS:
            raise SibaError(f"unknown blend pattern {pattern!r} (use image, with an image file or the default "
                            "photograph, or noise)")
        if image is not None and (not isinstance(image, str) or pattern != "image"):
            raise SibaError("image names a pattern file for pattern: image (a path)")
        if image is not None:
            read_pattern(image, 3, 8, 8)  # a missing or unreadable file fails now, before any work
        self.pattern, self.image = pattern, image

    def make_pattern(self, shape: tuple[int, int, int]) -> torch.Tensor:
        c, h, w = shape
        if self.pattern == "noise":
            return torch.rand(c, h, w, generator=torch.Generator().manual_seed(self.seed))
        return read_pattern(self.image or default_pattern_file(), c, h, w)

    def validate(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().validate(image_shape, num_classes)
        if self.pattern == "image" and image_shape[0] not in (1, 3):
            raise SibaError(f"an image pattern fits 1- or 3-channel data, not {image_shape[0]} channels")

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint=None) -> BlendTrigger:
        self.check_data(train_set, surrogate)
        c, h, w = train_set.image_shape
        pattern = self.make_pattern((c, h, w))
        source = "noise" if self.pattern == "noise" else str(self.image or "chelsea-128.png (CC0, shipped)")
        return BlendTrigger(pattern, torch.full((h, w), float(self.alpha)), num_classes=train_set.num_classes,
                            target=self.target, target_rule=self.target_rule,
                            meta=self._meta(pattern_source=source))
