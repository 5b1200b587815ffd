"""Labelling rules: which samples an attack poisons, the label each poisoned sample gets, and
what counts as the attack's success — kept apart from the trigger (what is done to the image).

- :class:`AllToOne` — every poisoned sample gets the target class; samples of the target
  class are neither poisoned nor counted (the ASR is over the test images of other classes).
- :class:`AllToAll` — a sample of class ``y`` gets ``(y+1) mod K``; every sample counts.
- :class:`RandomLabels` — UBW-P (untargeted, Li et al. 2022): each poisoned training sample gets
  a class drawn uniformly at random, fixed per sample (a seeded function of its index); the
  attack succeeds on a test image when the triggered image is classified as anything but its
  true class, counted over the test images the model classifies correctly when clean.

Poisoning, the ASR and the report ask the rule, never the trigger's kind.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import SibaError

TARGET_RULES = ("all-to-one", "all-to-all", "random")


class LabelRule:
    """Base: subclasses set ``name`` and ``targeted`` and implement :meth:`poison_labels`."""

    name: ClassVar[str] = ""
    targeted: ClassVar[bool] = True

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise SibaError(f"a labelling rule needs a number of classes ≥ 2, got {num_classes!r}")
        self.num_classes = num_classes

    def eligible(self, labels: torch.Tensor) -> torch.Tensor:
        """Which training samples may be poisoned (a bool mask)."""
        return torch.ones_like(labels, dtype=torch.bool)

    def poison_labels(self, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The labels the poisoned samples get; ``indices`` are their positions in the source set."""
        raise NotImplementedError

    def counted(self, labels: torch.Tensor, clean_pred: torch.Tensor | None = None) -> torch.Tensor:
        """Which test samples the attack success rate is measured on (a bool mask)."""
        return self.eligible(labels)

    def success(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Whether the prediction on each triggered test image is the attack's success."""
        return pred == self.test_targets(labels)

    def test_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The class a triggered test image of class ``labels`` should get (targeted rules)."""
        raise NotImplementedError

    @property
    def target(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"target_rule": self.name, "target": self.target}


class AllToOne(LabelRule):
    name = "all-to-one"

    def __init__(self, num_classes: int, target: int = 0) -> None:
        super().__init__(num_classes)
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
            raise SibaError(f"target class {target!r} is not among the {num_classes} classes (0..{num_classes - 1})")
        self._target = target

    @property
    def target(self) -> int:
        return self._target

    def eligible(self, labels: torch.Tensor) -> torch.Tensor:
        return labels != self._target

    def poison_labels(self, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return torch.full_like(labels, self._target)

    def test_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.full_like(labels, self._target)


class AllToAll(LabelRule):
    name = "all-to-all"

    def poison_labels(self, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return (labels + 1) % self.num_classes

    def test_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels + 1) % self.num_classes


class RandomLabels(LabelRule):
    """UBW-P's labels: uniform over the classes, fixed per sample index (seeded)."""

    name = "random"
    targeted = False

    def __init__(self, num_classes: int, seed: int = 0) -> None:
        super().__init__(num_classes)
        self.seed = int(seed)

    def poison_labels(self, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        if idx.numel() == 0:
            return labels.clone()
        # one seeded draw per possible index: sample i always gets the same class, whatever else is poisoned
        g = torch.Generator().manual_seed(self.seed)
        table = torch.randint(0, self.num_classes, (int(idx.max()) + 1,), generator=g)
        return table[idx].to(labels.device, labels.dtype)

    def counted(self, labels: torch.Tensor, clean_pred: torch.Tensor | None = None) -> torch.Tensor:
        if clean_pred is None:
            raise SibaError("an untargeted attack's success is counted on the images classified correctly when clean")
        return clean_pred == labels

    def success(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pred != labels

    def describe(self) -> dict[str, Any]:
        return {"target_rule": self.name, "target": None, "label_seed": self.seed}


def make_rule(num_classes: int, target_rule: str = "all-to-one", target: int | None = 0,
              seed: int = 0) -> LabelRule:
    """A rule by name (``all-to-one`` with ``target``, ``all-to-all``, ``random`` with ``seed``)."""
    if target_rule == "all-to-one":
        return AllToOne(num_classes, 0 if target is None else target)
    if target_rule == "all-to-all":
        return AllToAll(num_classes)
    if target_rule == "random":
        return RandomLabels(num_classes, seed)
    raise SibaError(f"unknown target rule {target_rule!r} (use {', '.join(TARGET_RULES)})")

