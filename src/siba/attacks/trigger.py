"""Triggers: what an attack does to an image, apart from how it was made and how samples are labelled.

Two kinds cover the attacks here:

- :class:`AdditiveTrigger` — additive and sparse: ``x' = clip(x + m⊙δ, 0, 1)`` with a spatial
  mask ``m`` (H×W, shared by the channels) and a perturbation ``δ`` (C×H×W). SIBA, Sparse,
  Random and TUAP make these; its budgets (``k`` pixels, ``|δ| ≤ ε``) hold exactly, and
  after 8-bit quantisation too (a float ``x + m⊙δ`` adds only float32 rounding, < 6e-8).
- :class:`BlendTrigger` — ``x' = (1−α)⊙x + α⊙p`` with a pattern ``p`` and an opacity map
  ``α``: BadNets (a binary ``α`` on a patch) and Blended (a constant ``α``).

Every trigger also carries its labelling rule (:mod:`siba.attacks.labels`: all-to-one towards
``target``, all-to-all towards ``(y+1) mod K``, or UBW-P's random labels), which poisoning and
the attack success rate ask; it applies itself to a batch on any device, saves to safetensors
with a JSON description, and renders a PNG.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import SibaError
from ..runtime import load_tensors, save_tensors, write_json
from .labels import TARGET_RULES, LabelRule, make_rule


def trigger_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``trigger.safetensors`` and ``trigger.json`` for a path given with or without suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


class Trigger:
    """Base of every trigger: target rule, device moves, save/load, uint8 application."""

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type["Trigger"]]] = {}
    cover_ratio: float = 0.0  # cover samples per poisoned sample (WaNet's noise mode); 0: none

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            Trigger._registry[cls.kind] = cls

    def __init__(self, *, num_classes: int, target: int | None = 0, target_rule: str = "all-to-one",
                 meta: dict[str, Any] | None = None, label_seed: int = 0) -> None:
        if target_rule not in TARGET_RULES:
            raise SibaError(f"unknown target rule {target_rule!r} (use {', '.join(TARGET_RULES)})")
        if target is not None and not isinstance(target, bool):
            target = int(target)
        self.num_classes = int(num_classes)
        self.rule: LabelRule = make_rule(self.num_classes, target_rule, target, label_seed)
        self.meta = dict(meta or {})

    @property
    def target(self) -> int:
        """The target class of an all-to-one rule (0 for rules without one, as saved files had)."""
        return self.rule.target if self.rule.target is not None else 0

    @property
    def target_rule(self) -> str:
        return self.rule.name

    # ---------------------------------------------------------------- interface
    @property
    def shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The poisoned version of a float ``[0,1]`` batch ``N×C×H×W`` (on the batch's device)."""
        raise NotImplementedError

    def apply_cover(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A cover sample's image (a trigger with ``cover_ratio`` > 0 defines it): float ``[0,1]`` batch in and out."""
        raise NotImplementedError(f"a {self.kind} trigger has no cover samples")

    def apply_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """The poisoned version of a uint8 batch, as a released 8-bit image would carry it."""
        out = self.apply(x.float() / 255) * 255
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "Trigger":
        raise NotImplementedError

    # ---------------------------------------------------------------- shared
    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The class a triggered image of class ``labels`` should get (targeted rules; see ``rule``)."""
        return self.rule.test_targets(labels)

    def check_fits(self, image_shape: tuple[int, ...], num_classes: int) -> None:
        if tuple(image_shape) != tuple(self.shape):
            raise SibaError(f"the trigger is for {self.shape[1]}×{self.shape[2]} images with {self.shape[0]} channels, "
                            f"the data has {tuple(image_shape)}")
        if num_classes != self.num_classes:
            raise SibaError(f"the trigger is for {self.num_classes} classes, the data has {num_classes}")

    def fingerprint(self) -> str:
        """The identity of what the trigger does (16 hex digits of a SHA-256): its kind, target rule,
        classes and tensors, bit for bit; not how or when it was made (wall time, history), so a
        trigger made again with the same result keeps its fingerprint."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps({"kind": self.kind, "num_classes": self.num_classes,
                                       **self.rule.describe()}, sort_keys=True).encode())
        for name, t in sorted(self.tensors().items()):
            t = t.detach().to("cpu").contiguous()
            h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "num_classes": self.num_classes, "target": self.target,
                **self.rule.describe(), **self.meta}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.safetensors`` (tensors + description) and ``<path>.json`` (readable copy)."""
        st, js = trigger_paths(path)
        desc = self.describe()
        save_tensors(st, self.tensors(), {"siba_trigger": desc})
        write_json(js, desc)
        return st

    @staticmethod
    def load(path: str | os.PathLike, device: torch.device | str = "cpu") -> "Trigger":
        st, _ = trigger_paths(path)
        if not st.is_file():
            raise SibaError(f"trigger file not found: {st}")
        tensors, meta = load_tensors(st)
        desc = meta.get("siba_trigger")
        if not isinstance(desc, dict) or desc.get("kind") not in Trigger._registry:
            raise SibaError(f"{st} is not a siba trigger")
        cls = Trigger._registry[desc["kind"]]
        try:
            mark = cls._from_saved(tensors, desc)
        except KeyError as exc:  # a description or tensor the file lacks
            raise SibaError(f"{st} is an incomplete siba trigger: it has no {exc.args[0]!r}") from None
        return mark.to(device)

    @classmethod
    def _from_saved(cls, tensors: dict[str, torch.Tensor], desc: dict[str, Any]) -> "Trigger":
        raise NotImplementedError

    @staticmethod
    def _rule_of(desc: dict[str, Any]) -> dict[str, Any]:
        """The constructor's labelling-rule arguments from a saved description."""
        rule = desc["target_rule"]
        target = desc["target"] if rule == "all-to-one" else desc.get("target")
        return {"num_classes": desc["num_classes"], "target": target, "target_rule": rule,
                "label_seed": desc.get("label_seed", 0)}

    @staticmethod
    def _meta_of(desc: dict[str, Any], own: tuple[str, ...]) -> dict[str, Any]:
        base = ("kind", "shape", "num_classes", "target", "target_rule", "label_seed")
        return {k: v for k, v in desc.items() if k not in base + own}

    def visual(self) -> torch.Tensor:
        """The trigger as a C×H×W picture: what it does to a mid-grey image."""
        grey = torch.full(self.shape, 0.5)
        return self.apply(grey.unsqueeze(0))[0].cpu()

    def render(self, path: str | os.PathLike, samples: torch.Tensor | None = None, scale: int = 4,
               max_samples: int = 4) -> Path:
        """PNG: the trigger magnified, then for each sample (uint8 C×H×W) a row of clean, poisoned
        (8-bit) and amplified difference images."""
        from ..imaging import difference_image, tile_grid

        rows = [[("trigger", self.visual())]]
        if samples is not None and len(samples):
            xs = samples[:max_samples].to(torch.uint8).cpu()
            poisoned = self.apply_uint8(xs).cpu().float() / 255
            for c, p in zip(xs.float() / 255, poisoned):
                rows.append([("clean", c), ("poisoned", p), ("difference", difference_image(c, p))])
        return tile_grid(rows, path, scale)


class AdditiveTrigger(Trigger):
    """A sparse additive trigger ``clip(x + m⊙δ, 0, 1)`` with budgets ``k`` (pixels) and ``ε``."""

    kind = "additive"

    def __init__(self, delta: torch.Tensor, mask: torch.Tensor, *, eps: float | None = None, k: int | None = None,
                 num_classes: int, target: int | None = 0, target_rule: str = "all-to-one",
                 meta: dict[str, Any] | None = None, label_seed: int = 0) -> None:
        super().__init__(num_classes=num_classes, target=target, target_rule=target_rule, meta=meta,
                         label_seed=label_seed)
        if delta.dim() != 3 or mask.shape != delta.shape[1:]:
            raise SibaError(f"delta must be C×H×W and mask H×W, got {tuple(delta.shape)} and {tuple(mask.shape)}")
        self.mask = (mask != 0).to(torch.float32)
        self.delta = delta.to(torch.float32) * self.mask
        self.eps = float(eps) if eps is not None else float(self.delta.abs().max())
        self.k = int(k) if k is not None else int(self.mask.sum())
        if int(self.mask.sum()) > self.k:
            raise SibaError(f"mask has {int(self.mask.sum())} pixels, more than k={self.k}")
        if float(self.delta.abs().max()) > self.eps * (1 + 1e-6):
            raise SibaError(f"|δ| reaches {float(self.delta.abs().max()):.5f}, above ε={self.eps:.5f}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.delta.shape)  # type: ignore[return-value]

    @property
    def perturbation(self) -> torch.Tensor:
        return self.mask * self.delta

    def to(self, device: torch.device | str) -> "AdditiveTrigger":
        self.delta, self.mask = self.delta.to(device), self.mask.to(device)
        return self

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        pert = self.perturbation.to(x.device, x.dtype)
        return (x + pert).clamp_(0, 1)

    def visual(self) -> torch.Tensor:
        """``0.5 + m⊙δ / (2·max|δ|)``: grey where nothing changes, the sign and size of the change elsewhere."""
        pert = self.perturbation.cpu()
        peak = float(pert.abs().max()) or 1.0
        return 0.5 + pert / (2 * peak)

    def level_budget(self) -> int:
        """The largest change in 8-bit levels that stays within ``ε``."""
        return int(math.floor(255 * self.eps + 1e-5))

    def apply_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """8-bit poisoning with the budgets intact.

        The change ``255·clip(x+m⊙δ) − 255·x`` is truncated towards zero (the reference
        converts to uint8 by truncation) and kept within ``floor(255·ε)`` levels, so a
        released image changes at most ``k`` pixels by at most ``ε``.
        """
        pert = self.perturbation.to(x.device) * 255
        xi = x.to(torch.int16)
        change = (xi.float() + pert).clamp_(0, 255) - xi.float()
        change = torch.where((change - change.round()).abs() < 1e-3, change.round(), change).trunc()
        lv = self.level_budget()
        return (xi + change.clamp_(-lv, lv).to(torch.int16)).clamp_(0, 255).to(torch.uint8)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta, "mask": self.mask}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"k": self.k, "eps": self.eps, "l0": int(self.mask.sum()), "linf": float(self.delta.abs().max())})
        return d

    @classmethod
    def _from_saved(cls, tensors: dict[str, torch.Tensor], desc: dict[str, Any]) -> "AdditiveTrigger":
        return cls(tensors["delta"], tensors["mask"], eps=desc.get("eps"), k=desc.get("k"),
                   **cls._rule_of(desc), meta=cls._meta_of(desc, ("k", "eps", "l0", "linf")))


class BlendTrigger(Trigger):
    """``x' = (1−α)⊙x + α⊙p``: a patch (BadNets, binary ``α``) or a blend (Blended)."""

    kind = "blend"

    def __init__(self, pattern: torch.Tensor, alpha: torch.Tensor, *, num_classes: int, target: int | None = 0,
                 target_rule: str = "all-to-one", meta: dict[str, Any] | None = None, label_seed: int = 0) -> None:
        super().__init__(num_classes=num_classes, target=target, target_rule=target_rule, meta=meta,
                         label_seed=label_seed)
        if pattern.dim() != 3:
            raise SibaError(f"pattern must be C×H×W, got {tuple(pattern.shape)}")
        if alpha.dim() == 2:
            alpha = alpha.unsqueeze(0)
        if alpha.shape[-2:] != pattern.shape[-2:]:
            raise SibaError(f"alpha map {tuple(alpha.shape)} does not fit the pattern {tuple(pattern.shape)}")
        self.pattern = pattern.to(torch.float32).clamp(0, 1)
        self.alpha = alpha.to(torch.float32).clamp(0, 1).expand_as(self.pattern).contiguous()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pattern.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "BlendTrigger":
        self.pattern, self.alpha = self.pattern.to(device), self.alpha.to(device)
        return self

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        a, p = self.alpha.to(x.device, x.dtype), self.pattern.to(x.device, x.dtype)
        return x + a * (p - x)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"pattern": self.pattern, "alpha": self.alpha}

    @classmethod
    def _from_saved(cls, tensors: dict[str, torch.Tensor], desc: dict[str, Any]) -> "BlendTrigger":
        return cls(tensors["pattern"], tensors["alpha"], **cls._rule_of(desc), meta=cls._meta_of(desc, ()))


def load_trigger(path: str | os.PathLike, device: torch.device | str = "cpu") -> Trigger:
    """Load any saved trigger (additive or blend)."""
    return Trigger.load(path, device)
