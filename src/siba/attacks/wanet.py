"""WaNet (Nguyen & Tran, ICLR 2021), poison-only: an imperceptible warp of the whole image.

The warping field comes from a random ``k×k`` control grid of displacements (uniform in
``[−1, 1]``, divided by their mean absolute value), upsampled bicubically to ``H×W``; the
sampling grid is the identity plus ``s·field/H`` (strength ``s``, 0.5 by default), clipped to
``[−1, 1]``, and a poisoned image is ``grid_sample(x, grid)`` (bilinear, ``align_corners=True``),
batched on the device. The field is part of the saved trigger.

Noise mode (on by default, ``noise: false`` turns it off): a further share of the training
images — ``noise_ratio`` times the poisoned count, 2 by default as in WaNet — is warped with the
field plus a fresh random perturbation of up to one pixel per image (``(U[−1,1])/H``) and keeps its
labels, so that the victim learns the exact field rather than "any warp".
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import ImageSet
from ..errors import SibaError
from .base import Attack, register_attack
from .sparse import parse_number
from .trigger import Trigger


def warp_field(grid_size: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """WaNet's displacement field ``H×W×2`` from a seeded ``k×k`` control grid (mean |value| 1 before upsampling)."""
    ins = torch.rand(1, 2, grid_size, grid_size, generator=generator) * 2 - 1
    ins = ins / ins.abs().mean()
    field = F.interpolate(ins, size=(height, width), mode="bicubic", align_corners=True)
    return field[0].permute(1, 2, 0).contiguous()


def identity_grid(height: int, width: int) -> torch.Tensor:
    """The sampling grid ``H×W×2`` (x, y in ``[−1, 1]``) that ``grid_sample`` maps to the image itself."""
    ys = torch.linspace(-1, 1, height)
    xs = torch.linspace(-1, 1, width)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=2)


class WarpTrigger(Trigger):
    """A fixed warp ``grid_sample(x, grid)``; ``noise_ratio`` > 0 adds WaNet's noise-mode cover samples."""

    kind = "warp"

    def __init__(self, grid: torch.Tensor, *, strength: float, grid_size: int, noise_ratio: float = 0.0,
                 num_classes: int, target: int | None = 0, target_rule: str = "all-to-one",
                 meta: dict[str, Any] | None = None, label_seed: int = 0) -> None:
        super().__init__(num_classes=num_classes, target=target, target_rule=target_rule, meta=meta,
                         label_seed=label_seed)
        if grid.dim() != 3 or grid.shape[2] != 2:
            raise SibaError(f"a warp grid must be H×W×2, got {tuple(grid.shape)}")
        self.grid = grid.to(torch.float32).clamp(-1, 1)
        self.strength, self.grid_size, self.cover_ratio = float(strength), int(grid_size), float(noise_ratio)
        self._channels = int((meta or {}).get("channels", 3))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self._channels, int(self.grid.shape[0]), int(self.grid.shape[1]))

    def to(self, device: torch.device | str) -> "WarpTrigger":
        self.grid = self.grid.to(device)
        return self

    def _sample(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid.to(x.device, x.dtype), mode="bilinear", padding_mode="zeros",
                             align_corners=True).clamp_(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self._sample(x, self.grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1))

    def apply_cover(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noise mode: the field plus a random shift of up to one pixel per position and image."""
        n, h = x.shape[0], self.grid.shape[0]
        jitter = (torch.rand(n, *self.grid.shape, generator=generator) * 2 - 1) / h
        return self._sample(x, (self.grid.unsqueeze(0).cpu() + jitter).clamp_(-1, 1))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"grid": self.grid}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"strength": self.strength, "grid_size": self.grid_size, "noise_ratio": self.cover_ratio,
                  "channels": self._channels})
        return d

    @classmethod
    def _from_saved(cls, tensors: dict[str, torch.Tensor], desc: dict[str, Any]) -> "WarpTrigger":
        meta = cls._meta_of(desc, ("strength", "grid_size", "noise_ratio"))
        return cls(tensors["grid"], strength=desc["strength"], grid_size=desc["grid_size"],
                   noise_ratio=desc.get("noise_ratio", 0.0), **cls._rule_of(desc), meta=meta)


@register_attack
class WaNet(Attack):
    """WaNet, poison-only: a smooth random warp of the image; noise mode on by default."""

    name = "wanet"
    description = "imperceptible warp (control grid k=4, strength 0.5) with noise-mode cover samples"

    def __init__(self, *, grid_size: int = 4, strength: float | str = 0.5, noise: bool = True,
                 noise_ratio: float | str = 2.0, target: int = 0, all_to_all: bool = False, seed: int = 0) -> None:
        super().__init__(target=target, all_to_all=all_to_all, seed=seed)
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
            raise SibaError(f"the WaNet control grid size must be a whole number ≥ 2, got {grid_size!r}")
        self.strength = parse_number(strength, "strength")
        if not self.strength > 0:
            raise SibaError(f"the WaNet warping strength must be > 0, got {self.strength:g}")
        if not isinstance(noise, bool):
            raise SibaError(f"noise (WaNet's noise mode) must be true or false, got {noise!r}")
        self.noise_ratio = parse_number(noise_ratio, "noise_ratio")
        if not 0 <= self.noise_ratio <= 100:
            raise SibaError(f"noise_ratio (noise-mode samples per poisoned sample) must be in [0, 100], "
                            f"got {self.noise_ratio:g}")
        self.grid_size, self.noise = grid_size, noise

    def validate(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().validate(image_shape, num_classes)
        if min(image_shape[1:]) < self.grid_size:
            raise SibaError(f"a {self.grid_size}×{self.grid_size} control grid does not fit "
                            f"{image_shape[1]}×{image_shape[2]} images")

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint=None) -> WarpTrigger:
        self.check_data(train_set, surrogate)
        c, h, w = train_set.image_shape
        field = warp_field(self.grid_size, h, w, torch.Generator().manual_seed(self.seed))
        grid = (identity_grid(h, w) + self.strength * field / h).clamp(-1, 1)
        return WarpTrigger(grid, strength=self.strength, grid_size=self.grid_size,
                           noise_ratio=self.noise_ratio if self.noise else 0.0, num_classes=train_set.num_classes,
                           target=self.target, target_rule=self.target_rule,
                           meta=self._meta(channels=c, max_displacement_px=float(
                               (self.strength * field / h).abs().max() * (h - 1) / 2)))
