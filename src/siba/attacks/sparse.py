"""SIBA and the same-budget baselines: Sparse, Random and TUAP.

All four make a :class:`AdditiveTrigger` ``clip(x + m⊙δ, 0, 1)`` with at most ``k`` changed pixels
and ``|δ| ≤ ε``:

- ``siba``: the optimised mask and magnitudes (paper Algorithm 1);
- ``sparse``: a random fixed mask of ``k`` pixels, magnitudes optimised by the same step;
- ``random``: a random mask of ``k`` pixels, values uniform in ``[−ε, ε]``, no optimisation;
- ``tuap``: the optimisation with no L0 budget (``k = H×W``), a targeted universal
  adversarial perturbation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data.dataset import ImageSet
from ..errors import SibaError
from ..runtime import check_precision
from .base import Attack, register_attack
from .optimize import MASK_RULES, float32_at_most, optimize_trigger, random_mask
from .trigger import AdditiveTrigger


def parse_number(value: Any, what: str) -> float:
    """A float from a number or a string such as ``"8/255"``."""
    if isinstance(value, bool):
        raise SibaError(f"{what} must be a number, got {value!r}")
    try:
        if isinstance(value, (int, float)):
            out = float(value)
        else:
            text = str(value).strip()
            num, _, den = text.partition("/")
            out = float(num) / float(den) if den else float(text)
    except (ValueError, ZeroDivisionError, OverflowError):  # OverflowError: an int beyond float's range
        out = math.nan
    if not math.isfinite(out):
        raise SibaError(f"{what} must be a number such as 0.03 or 8/255, got {value!r}")
    return out


def _check_eps(eps: Any) -> float:
    eps = parse_number(eps, "eps")
    if not 0 < eps <= 1:
        raise SibaError(f"eps must be in (0, 1], got {eps:g}")
    return eps


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SibaError(f"k must be a whole number of pixels ≥ 1, got {k!r}")
    return k


def _check_k_fits(k: int, shape: tuple[int, int, int]) -> None:
    if k > shape[1] * shape[2]:
        raise SibaError(f"k={k} is more than the {shape[1]}×{shape[2]}={shape[1] * shape[2]} pixels of an image")


class _SparseFamily(Attack):
    """Shared settings and checks of the additive, budgeted attacks."""

    def __init__(self, *, k: int = 100, eps: float | str = 8 / 255, target: int = 0, all_to_all: bool = False,
                 seed: int = 0) -> None:
        super().__init__(target=target, all_to_all=all_to_all, seed=seed)
        self.k = _check_k(k)
        self.eps = _check_eps(eps)

    def _k(self, shape: tuple[int, int, int]) -> int:
        return self.k

    def validate(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().validate(image_shape, num_classes)
        _check_k_fits(self._k(image_shape), image_shape)

    def _trigger(self, delta: torch.Tensor, mask: torch.Tensor, train_set: ImageSet, k: int,
                 **meta: Any) -> AdditiveTrigger:
        record = self._meta(**meta)
        record["params"]["k"] = k  # the budget used (TUAP's is H×W, whatever k it was given)
        return AdditiveTrigger(delta.cpu(), mask.cpu(), eps=self.eps, k=k, num_classes=train_set.num_classes,
                       target=self.target, target_rule=self.target_rule, meta=record)


class _Optimised(_SparseFamily):
    needs_surrogate = True
    fixed_mask = False

    def __init__(self, *, k: int = 100, eps: float | str = 8 / 255, alpha: float | str | None = None,
                 beta: float = 10.0, passes: int = 200, remask_every: int = 5, batch_size: int = 128,
                 mask_rule: str = "gradient", max_images: int | None = None, precision: str = "auto",
                 augment_pad: int = 0, augment_flip: bool = False,
                 target: int = 0, all_to_all: bool = False, seed: int = 0) -> None:
        super().__init__(k=k, eps=eps, target=target, all_to_all=all_to_all, seed=seed)
        self.alpha = parse_number(alpha, "alpha") if alpha is not None else 0.8 * self.eps
        self.beta = parse_number(beta, "beta")
        for name, v in (("passes", passes), ("remask_every", remask_every), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SibaError(f"{name} must be a whole number ≥ 1, got {v!r}")
        if self.alpha <= 0 or self.beta <= 0:
            raise SibaError("alpha and beta must be positive")
        if mask_rule not in MASK_RULES:
            raise SibaError(f"unknown mask rule {mask_rule!r} (use {' or '.join(MASK_RULES)})")
        if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                       or max_images < 1):
            raise SibaError(f"max_images must be a whole number ≥ 1, got {max_images!r}")
        check_precision(precision)
        if isinstance(augment_pad, bool) or not isinstance(augment_pad, int) or not 0 <= augment_pad <= 64:
            raise SibaError(f"augment_pad (the victim's crop padding to optimise against) must be a whole number "
                            f"in [0, 64], got {augment_pad!r}")
        if not isinstance(augment_flip, bool):
            raise SibaError(f"augment_flip must be true or false, got {augment_flip!r}")
        self.augment_pad, self.augment_flip = augment_pad, augment_flip
        self.passes, self.remask_every, self.batch_size = passes, remask_every, batch_size
        self.mask_rule, self.max_images, self.precision = mask_rule, max_images, precision

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None) -> AdditiveTrigger:
        """Optimise the trigger on ``surrogate``; with ``checkpoint``, keep and continue its progress there
        (the file stays when this returns: the caller removes it once the trigger is saved)."""
        self.check_data(train_set, surrogate)
        k = self._k(train_set.image_shape)
        g = torch.Generator().manual_seed(self.seed)
        data = train_set
        if self.max_images is not None and self.max_images < len(train_set):
            data = train_set.subset(torch.randperm(len(train_set), generator=g)[:self.max_images].sort().values)
        fixed = random_mask(train_set.image_shape[1:], k, g) if self.fixed_mask else None
        assert surrogate is not None
        res = optimize_trigger(
            surrogate, data.images, data.labels, k=k, eps=self.eps, alpha=self.alpha, beta=self.beta,
            passes=self.passes, remask_every=self.remask_every, batch_size=self.batch_size,
            num_classes=train_set.num_classes, target=self.target, all_to_all=self.all_to_all,
            mask_rule=self.mask_rule, fixed_mask=fixed, device=device, precision=self.precision, seed=self.seed,
            progress=progress, log=log, checkpoint=checkpoint, identity={"attack": self.name},
            augment_pad=self.augment_pad, augment_flip=self.augment_flip)
        return self._trigger(res.delta, res.mask, train_set, k, best_pass=res.best_pass, best_loss=res.best_loss,
                             surrogate_success=res.history[res.best_pass - 1]["surrogate_success"]
                             if res.best_pass > 0 else None, optimisation_images=len(data),
                             history=res.history)


@register_attack
class SIBA(_Optimised):
    """SIBA: a sparse (k pixels) and invisible (|δ| ≤ ε) trigger optimised on a surrogate."""

    name = "siba"
    description = "sparse and invisible trigger optimised on a surrogate (the paper's method)"


@register_attack
class Sparse(_Optimised):
    """Sparse: a fixed random mask of k pixels, magnitudes optimised on the surrogate."""

    name = "sparse"
    description = "random fixed k-pixel mask, magnitudes optimised (same budgets as SIBA)"
    fixed_mask = True


@register_attack
class TUAP(_Optimised):
    """TUAP: the same optimisation without an L0 budget (k = H×W)."""

    name = "tuap"
    description = "targeted universal adversarial perturbation (SIBA's optimisation, k = all pixels)"

    def _k(self, shape: tuple[int, int, int]) -> int:
        return shape[1] * shape[2]


@register_attack
class RandomSparse(_SparseFamily):
    """Random: k random pixels, values uniform in [−ε, ε]; no optimisation."""

    name = "random"
    description = "random k-pixel mask with uniform values in [-eps, eps] (same budgets as SIBA)"

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None) -> AdditiveTrigger:
        self.check_data(train_set, surrogate)
        g = torch.Generator().manual_seed(self.seed)
        c, h, w = train_set.image_shape
        mask = random_mask((h, w), self.k, g)
        bound = float32_at_most(self.eps)
        delta = ((torch.rand(c, h, w, generator=g) * 2 - 1) * self.eps).clamp_(-bound, bound)
        return self._trigger(delta, mask, train_set, self.k)
