"""UBW-P (Li et al., NeurIPS 2022): an untargeted backdoor watermark with poisoned labels.

The trigger is BadNets' (a patch in a corner); each poisoned training sample — drawn from every
class — is relabelled to a class drawn uniformly at random and fixed per sample (a seeded
function of its index, :class:`siba.attacks.labels.RandomLabels`). The attack succeeds on a
test image when the triggered image is classified as anything but its true class, counted over
the test images the model classifies correctly when clean; the report adds the dispersibility
(the normalised entropy of the classes the triggered images get: 1 when they spread evenly).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..data.dataset import ImageSet
from .base import register_attack
from .patch import BadNets
from .trigger import BlendTrigger


@register_attack
class UBWP(BadNets):
    """UBW-P: BadNets' patch, each poisoned sample relabelled to a fixed uniformly random class."""

    name = "ubw-p"
    description = "untargeted: BadNets patch, poisoned labels uniformly random and fixed per sample"

    def __init__(self, *, size: int = 3, pattern: str = "checkerboard", corner: str = "bottom-right", margin: int = 0,
                 target: int = 0, all_to_all: bool = False, seed: int = 0) -> None:
        super().__init__(size=size, pattern=pattern, corner=corner, margin=margin, target=target,
                         all_to_all=all_to_all, seed=seed)

    @property
    def target_rule(self) -> str:
        return "random"

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint=None) -> BlendTrigger:
        patch = super().generate(train_set, surrogate, device=device, progress=progress, log=log)
        return BlendTrigger(patch.pattern, patch.alpha[0], num_classes=train_set.num_classes, target=None,
                            target_rule="random", label_seed=self.seed, meta=self._meta())
