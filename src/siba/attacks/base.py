"""The interface every attack shares, and the registry that finds attacks by name.

An attack is one object: its settings go in at construction (checked there, one-line
errors), and ``generate(train_set, surrogate)`` returns a trigger (:class:`Trigger`). Poisoning,
victim training and evaluation are the same for every attack and live in their own
modules, so a new attack is a new ``generate``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..data.dataset import ImageSet
from ..errors import SibaError
from ..registry import Registry
from ..runtime import SEED_LIMIT, check_seed  # noqa: F401  (check_seed: part of this module's interface)
from .trigger import Trigger

ATTACKS = Registry("attack")  # name → Attack subclass


def register_attack(cls: type["Attack"]) -> type["Attack"]:
    ATTACKS.add(cls.name, cls, cls.description)
    return cls


class Attack:
    """Base class. Subclasses set ``name``, ``needs_surrogate`` and implement :meth:`generate`."""

    name: ClassVar[str] = ""
    needs_surrogate: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, *, target: int = 0, all_to_all: bool = False, seed: int = 0) -> None:
        if not isinstance(target, int) or isinstance(target, bool) or target < 0:
            raise SibaError(f"target must be a class index ≥ 0, got {target!r}")
        if not isinstance(all_to_all, bool):
            raise SibaError(f"all_to_all must be true or false, got {all_to_all!r}")
        self.target = target
        self.all_to_all = all_to_all
        self.seed = check_seed(seed)

    @property
    def target_rule(self) -> str:
        return "all-to-all" if self.all_to_all else "all-to-one"

    def params(self) -> dict[str, Any]:
        """The settings this attack was made with (JSON-able)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def validate(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        """Check the settings against the data before any work (subclasses add their checks)."""
        if self.target >= num_classes:
            raise SibaError(f"target class {self.target} is not among the {num_classes} classes "
                            f"(0..{num_classes - 1})")

    def check_data(self, train_set: ImageSet, surrogate: nn.Module | None) -> None:
        self.validate(train_set.image_shape, train_set.num_classes)
        if self.needs_surrogate:
            if surrogate is None:
                raise SibaError(f"the {self.name} attack needs a surrogate model")
            spec = getattr(surrogate, "siba_spec", None)
            n_out = spec["num_classes"] if spec else None
            if n_out is not None and n_out != train_set.num_classes:
                raise SibaError(f"the surrogate has {n_out} classes, the data has {train_set.num_classes}")

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None) -> Trigger:
        """The trigger of this attack for ``train_set`` (and ``surrogate`` where it needs one).

        ``checkpoint``: a file where an optimising attack keeps its progress after every pass and
        continues from when it exists (see :func:`siba.attacks.optimize.optimize_trigger`); the
        caller removes it once the trigger is saved. Attacks that optimise nothing ignore it.
        """
        raise NotImplementedError

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"attack": self.name, "params": self.params(), **extra}


def create_attack(name: str, **params: Any) -> Attack:
    """An attack by registry name, with its settings checked."""
    cls = ATTACKS.lookup(name)
    sig = inspect.signature(cls.__init__)
    unknown = [k for k in params if k not in sig.parameters or k == "self"]
    if unknown:
        known = [k for k in sig.parameters if k != "self"]
        raise SibaError(f"unknown option(s) {', '.join(unknown)} for attack {name!r}; known: {', '.join(known)}")
    return cls(**params)


def list_attacks() -> dict[str, str]:
    return ATTACKS.describe()
