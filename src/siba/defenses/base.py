"""The interface every defense shares, the registry that finds defenses by name, and their input.

A defense is one object: its settings go in at construction (checked there, one-line
:class:`~siba.errors.SibaError`), and ``run(inputs, out_dir)`` reads a :class:`DefenseInput`
(the model under suspicion, the clean test set, the trigger when known, a clean validation
subset of the *training* set), writes ``<out_dir>/result.json`` and its figures (PNG), and
returns the result as a dict.

There is one base class per kind of defense, and each kind's metrics are computed in one
place (:mod:`siba.defenses.metrics`):

- :class:`InspectionDefense` — looks inside the model (Neural Cleanse, Grad-CAM): per-class
  scores and the classes it flags (``metrics.flagged``, ``metrics.scores``);
- :class:`RepairDefense` — returns a changed model (Fine-Pruning): BA and ASR before and after;
- :class:`DetectionDefense` — scores each test input (STRIP, Scale-Up): AUROC, TPR at a fixed
  FPR, TPR and FPR at the detector's threshold, and the ASR left after filtering.

The test set is only ever *evaluated* on. Everything a defense decides — thresholds, which
channels to prune, the images it optimises or fine-tunes on, the images STRIP superimposes —
comes from the clean validation subset, drawn from the training set (never the test set; see
:func:`clean_validation_subset`).
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch
from torch import nn

from ..data.dataset import ImageSet
from ..errors import SibaError
from ..registry import Registry
from ..runtime import pick_device, write_json
from .metrics import attack_success, finite_or_none, inspection_metrics, predict_logits, repair_metrics
from .metrics import attack_metrics  # noqa: F401 (re-exported: every defense measures BA/ASR with it)

DEFENSES = Registry("defense")  # name → Defense subclass
KINDS = ("inspection", "repair", "detection", "training")
SEED_LIMIT = 2 ** 32


def register_defense(cls: type["Defense"]) -> type["Defense"]:
    """Class decorator: add a defense to :data:`DEFENSES` under its ``name``."""
    if not cls.name or cls.kind not in KINDS:
        raise TypeError(f"{cls.__name__} needs a name and one of the kinds {KINDS}")
    DEFENSES.add(cls.name, cls, f"[{cls.kind}] {cls.description}")
    return cls


def create_defense(name: str, **settings: Any) -> "Defense":
    """A defense by registry name, with its settings checked (one-line errors)."""
    cls = DEFENSES.lookup(name)
    known = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "args", "kwargs")]
    unknown = [k for k in settings if k not in known]
    if unknown:
        raise SibaError(f"unknown option(s) {', '.join(unknown)} for defense {name!r}; known: {', '.join(known)}")
    return cls(**settings)


def list_defenses() -> dict[str, str]:
    """Registered defense names and one-line descriptions (kind first)."""
    return DEFENSES.describe()


# --------------------------------------------------------------------------- setting checks


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """A whole number (``3``, ``3.0``, ``"3"``) within ``[low, high]``, else a one-line error."""
    out: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        out = value
    elif isinstance(value, (float, str)) and not isinstance(value, bool):
        try:
            f = float(value)
            out = int(f) if math.isfinite(f) and f.is_integer() else None
        except ValueError:
            out = None
    where = f" in [{low}, {high}]" if low is not None and high is not None else \
        f" ≥ {low}" if low is not None else f" ≤ {high}" if high is not None else ""
    if out is None or (low is not None and out < low) or (high is not None and out > high):
        raise SibaError(f"{name} must be a whole number{where}, got {value!r}")
    return out


def check_float(value: Any, name: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite number (``1e-3`` or ``"1e-3"``) within the given bounds, else a one-line error."""
    out = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            out = float(value)
        except (ValueError, OverflowError):
            out = math.nan
    lo = "" if low is None else f"{'(' if low_open else '['}{low:g}, "
    hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
    where = f" in {lo}{hi}" if low is not None and high is not None else \
        f" {'>' if low_open else '≥'} {low:g}" if low is not None else \
        f" {'<' if high_open else '≤'} {high:g}" if high is not None else ""
    bad = not math.isfinite(out)
    if not bad and low is not None:
        bad = out <= low if low_open else out < low
    if not bad and high is not None:
        bad = out >= high if high_open else out > high
    if bad:
        raise SibaError(f"{name} must be a number{where}, got {value!r}")
    return out


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SibaError(f"unknown {name} {value!r} (use {', '.join(choices)})")
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SibaError(f"{name} must be true or false, got {value!r}")
    return value


def check_seed(value: Any, name: str = "seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise SibaError(f"{name} must be a whole number in [0, 2**32), got {value!r}")
    return value


def check_int_list(value: Any, name: str, low: int = 1) -> list[int]:
    """A non-empty list of distinct whole numbers ≥ ``low`` (one-line error otherwise)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SibaError(f"{name} must be a list of whole numbers ≥ {low}, got {value!r}")
    out = [check_int(v, f"each of {name}", low) for v in value]
    if not out or len(set(out)) != len(out):
        raise SibaError(f"{name} must be a non-empty list of distinct whole numbers ≥ {low}, got {value!r}")
    return out


# --------------------------------------------------------------------------- input


@dataclass
class DefenseInput:
    """What a defense works on.

    - ``model``: the classifier under suspicion (takes ``[0,1]`` images; a defense never changes
      it: a repair works on a copy);
    - ``test_set``: the clean test set (uint8), only evaluated on;
    - ``trigger``: the attack's trigger (a :class:`~siba.attacks.Trigger`) when known — detection
      metrics, ASR and Grad-CAM's trigger region need it; ``None`` for a model of unknown history;
    - ``clean_val``: clean images with their true labels from the **training** set (the
      defender's small clean set: what STRIP superimposes and calibrates on, what Neural Cleanse
      optimises on, what Fine-Pruning ranks channels on and fine-tunes on);
    - ``poisoned_train`` and ``poisoned_indices``: the poisoned training set and which of its
      samples are poisoned, when known (training-time defenses; :meth:`from_poisoned` draws
      ``clean_val`` from its other samples);
    - ``num_classes``: defaults to the test set's;
    - ``device``: defaults to the model's.
    """

    model: nn.Module
    test_set: ImageSet
    trigger: Any = None
    clean_val: ImageSet | None = None
    poisoned_train: ImageSet | None = None
    poisoned_indices: torch.Tensor | None = None
    num_classes: int | None = None
    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        if self.num_classes is None:
            self.num_classes = self.test_set.num_classes

    @classmethod
    def from_poisoned(cls, model: nn.Module, test_set: ImageSet, poisoned: Any, *, val_size: int = 1000,
                      seed: int = 0, device: torch.device | str | None = None) -> "DefenseInput":
        """An input from a :class:`~siba.poisoning.PoisonedSet`: its trigger, its poisoned set and
        indices, and ``val_size`` clean images drawn from its unpoisoned (and uncovered) samples."""
        exclude = torch.cat([torch.as_tensor(poisoned.indices, dtype=torch.long).flatten(),
                             torch.as_tensor(getattr(poisoned, "cover_indices", []), dtype=torch.long).flatten()])
        val = clean_validation_subset(poisoned.data, exclude, val_size, seed)
        return cls(model, test_set, poisoned.mark, val, poisoned.data,
                   torch.as_tensor(poisoned.indices, dtype=torch.long), device=device)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.test_set.image_shape

    def resolved_device(self) -> torch.device:
        if self.device is not None:
            return pick_device(self.device)
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def check(self, *, needs_trigger: bool = False, needs_val: int = 0, what: str = "this defense") -> None:
        """One-line errors for inputs that do not fit each other or the defense's needs."""
        if not isinstance(self.model, nn.Module):
            raise SibaError(f"{what} needs a model (a torch module), got {type(self.model).__name__}")
        if not isinstance(self.test_set, ImageSet):
            raise SibaError(f"the test set must be an ImageSet, got {type(self.test_set).__name__}")
        if len(self.test_set) == 0:
            raise SibaError("the test set is empty")
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise SibaError(f"num_classes must be a whole number ≥ 2, got {k!r}")
        if self.test_set.num_classes != k:
            raise SibaError(f"the test set has {self.test_set.num_classes} classes, not the {k} given")
        shape = self.image_shape
        for name, data in (("clean validation set", self.clean_val), ("poisoned training set", self.poisoned_train)):
            if data is None:
                continue
            if not isinstance(data, ImageSet):
                raise SibaError(f"the {name} must be an ImageSet, got {type(data).__name__}")
            if data.image_shape != shape:
                raise SibaError(f"the {name} has {_shape(data.image_shape)} images, the test set {_shape(shape)}")
            if data.num_classes != k:
                raise SibaError(f"the {name} has {data.num_classes} classes, the test set {k}")
        if self.clean_val is not None and (self.clean_val is self.test_set
                                           or self.clean_val.fingerprint() == self.test_set.fingerprint()):
            raise SibaError("the clean validation subset is the test set; draw it from the training set "
                            "(clean_validation_subset), so that no decision of a defense sees the test set")
        if self.poisoned_indices is not None and self.poisoned_train is not None:
            idx = torch.as_tensor(self.poisoned_indices)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self.poisoned_train)):
                raise SibaError(f"poisoned indices outside 0..{len(self.poisoned_train) - 1}")
        if needs_trigger and self.trigger is None:
            raise SibaError(f"{what} needs the attack's trigger to measure against")
        if self.trigger is not None:
            if not callable(getattr(self.trigger, "apply", None)):
                raise SibaError(f"the trigger must be a siba trigger (Trigger), got {type(self.trigger).__name__}")
            self.trigger.check_fits(shape, k)
        if needs_val:
            if self.clean_val is None:
                raise SibaError(f"{what} needs a clean validation subset of the training set (clean_val)")
            if len(self.clean_val) < needs_val:
                raise SibaError(f"{what} needs at least {needs_val} clean validation images, "
                                f"the subset has {len(self.clean_val)}")
        self._check_model(shape, k)

    def _check_model(self, shape: tuple[int, int, int], k: int) -> None:
        spec = getattr(self.model, "siba_spec", None)
        if isinstance(spec, dict) and spec.get("num_classes") not in (None, k):
            raise SibaError(f"the model is for {spec['num_classes']} classes, the data has {k}")
        dev = self.resolved_device()
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.to(dev)(torch.zeros(1, *shape, device=dev))
        except RuntimeError as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SibaError(f"the model does not take {_shape(shape)} images: {msg}") from None
        finally:
            self.model.train(was)
        if out.dim() != 2 or out.shape[1] != k:
            raise SibaError(f"the model gives {tuple(out.shape[1:])} outputs per image, the data has {k} classes")


def _shape(shape: Sequence[int]) -> str:
    c, h, w = shape
    return f"{h}×{w}×{c}"


def clean_validation_subset(train_set: ImageSet, exclude: Sequence[int] | torch.Tensor | None, size: int,
                            seed: int = 0) -> ImageSet:
    """``size`` images of ``train_set`` (seeded, without the ``exclude`` indices — the poisoned and
    cover samples), with their labels: the defender's clean validation subset. It comes from the
    training set, so the test set stays untouched by every decision a defense makes."""
    size = check_int(size, "the clean validation size", 1)
    keep = torch.ones(len(train_set), dtype=torch.bool)
    if exclude is not None:
        idx = torch.as_tensor(exclude, dtype=torch.long).flatten()
        if idx.numel():
            keep[idx] = False
    pool = torch.nonzero(keep).flatten()
    if size > len(pool):
        raise SibaError(f"a clean validation subset of {size} images asked for, but the training set has only "
                        f"{len(pool)} clean ones")
    g = torch.Generator().manual_seed(seed)
    chosen = pool[torch.randperm(len(pool), generator=g)[:size]].sort().values
    return train_set.subset(chosen, f"{train_set.name}-clean-val")


# --------------------------------------------------------------------------- shared helpers


def progress_bar(total: int, desc: str, progress: bool | None, unit: str = "it") -> Any:
    """A tqdm bar when ``progress`` is true, or None and stderr is a terminal; else None."""
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def poisoned_inputs(test_set: ImageSet, mark: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of the test images the trigger attacks (``mark.rule.eligible``) and their labels."""
    counted = mark.rule.eligible(test_set.labels).cpu().bool()
    idx = torch.nonzero(counted).flatten()
    return idx, test_set.labels[idx]


def trigger_region(mark: Any) -> torch.Tensor | None:
    """The H×W pixels a trigger changes, as a bool map: an additive trigger's ``mask``, a blend
    or patch trigger's ``alpha > 0`` (any channel); None for a trigger with neither (a warp)."""
    mask = getattr(mark, "mask", None)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.detach().cpu() != 0
    alpha = getattr(mark, "alpha", None)
    if isinstance(alpha, torch.Tensor):
        a = alpha.detach().cpu()
        return (a > 0).any(0) if a.dim() == 3 else a > 0
    return None


@torch.no_grad()
def frozen(model: nn.Module) -> dict[str, bool]:
    """Turn off the gradients of ``model``'s parameters; returns their previous ``requires_grad``."""
    state = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    return state


def unfreeze(model: nn.Module, state: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        p.requires_grad_(state.get(n, True))


def last_conv_and_norm(model: nn.Module) -> tuple[str, nn.Conv2d, str | None, nn.BatchNorm2d | None]:
    """The model's last convolution (in registration order) and the batch norm that follows it
    (the first ``BatchNorm2d`` registered after it with as many features), as ``(name, conv,
    bn_name, bn)``; ``bn`` is None when the last convolution has no batch norm after it.

    FastNet: ``block3.conv2`` / ``block3.bn2``; ResNet: ``layer4.<last>.conv2`` / ``bn2``;
    VGG: the last ``features.<i>`` convolution and its batch norm.
    """
    mods = list(model.named_modules())
    conv_at = [i for i, (_, m) in enumerate(mods) if isinstance(m, nn.Conv2d)]
    if not conv_at:
        raise SibaError(f"the model ({type(model).__name__}) has no convolutional layer")
    i = conv_at[-1]
    name, conv = mods[i]
    for bn_name, m in mods[i + 1:]:
        if isinstance(m, nn.BatchNorm2d) and m.num_features == conv.out_channels:
            return name, conv, bn_name, m  # type: ignore[return-value]
    return name, conv, None, None  # type: ignore[return-value]


# --------------------------------------------------------------------------- defenses


class Defense:
    """Base class. Subclasses set ``name``, ``kind``, ``description`` and implement :meth:`_run`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_trigger: ClassVar[bool] = False  # the defense cannot run without the attack's trigger
    min_val: ClassVar[int] = 0  # the fewest clean validation images it needs (0: none)

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = check_seed(seed)
        self.artifacts: dict[str, Any] = {}  # Python objects of the last run (reversed triggers, repaired model)

    def params(self) -> dict[str, Any]:
        """The settings this defense was made with (JSON-able)."""
        sig = inspect.signature(type(self).__init__)
        out = {}
        for k in sig.parameters:
            if k != "self" and hasattr(self, k):
                v = getattr(self, k)
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def min_val_images(self) -> int:
        """The fewest clean validation images this defense, with its settings, needs."""
        return self.min_val

    def check_inputs(self, inputs: DefenseInput) -> None:
        """Check ``inputs`` against the defense's needs before any work (one-line errors)."""
        if not isinstance(inputs, DefenseInput):
            raise SibaError(f"a defense runs on a DefenseInput, got {type(inputs).__name__}")
        inputs.check(needs_trigger=self.needs_trigger, needs_val=self.min_val_images(), what=f"{self.name}")

    def run(self, inputs: DefenseInput, out_dir: str | Path, *, progress: bool | None = None,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Run the defense on ``inputs``; write ``<out_dir>/result.json`` and the figures; return the result.

        The inputs are checked first, so a mistake is a one-line :class:`SibaError` before
        anything is written. ``progress``: tqdm bars (None: when stderr is a terminal).
        """
        self.check_inputs(inputs)
        out = Path(out_dir)
        dev = inputs.resolved_device()
        model = inputs.model
        was = model.training
        convs = [p for p in model.parameters() if p.dim() == 4]
        was_cl = bool(convs) and convs[0].is_contiguous(memory_format=torch.channels_last)
        model.to(dev).eval()
        if convs and dev.type == "cpu":  # oneDNN's convolutions are ~1.5x faster in channels_last on a CPU
            model.to(memory_format=torch.channels_last)
        self.artifacts = {}
        t0 = time.perf_counter()
        try:
            body = self._run(inputs, model, dev, out, progress, log or (lambda s: None))
        finally:
            model.train(was)
            if convs and not was_cl:
                model.to(memory_format=torch.contiguous_format)
        wall = time.perf_counter() - t0
        trig = inputs.trigger
        result: dict[str, Any] = {
            "defense": self.name,
            "kind": self.kind,
            "settings": self.params(),
            "model": dict(getattr(model, "siba_spec", {}) or {}) or None,
            "trigger": None if trig is None else {
                "kind": getattr(trig, "kind", None), "target_rule": getattr(trig, "target_rule", None),
                "target": getattr(trig, "target", None), "fingerprint": _fingerprint(trig)},
            "data": {"test_images": len(inputs.test_set),
                     "clean_val_images": len(inputs.clean_val) if inputs.clean_val is not None else 0,
                     "image_shape": list(inputs.image_shape), "num_classes": inputs.num_classes},
            "device": str(dev),
            **body,
            "wall_s": round(wall, 3),
        }
        result = finite_or_none(result)
        write_json(out / "result.json", result)
        return result

    def _run(self, inputs: DefenseInput, model: nn.Module, device: torch.device, out: Path,
             progress: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
        """The defense's work: returns the result's own part (``metrics``, ``figures``, details)."""
        raise NotImplementedError


def _fingerprint(mark: Any) -> str | None:
    try:
        return mark.fingerprint()
    except Exception:  # a trigger without tensors to hash
        return None


class InspectionDefense(Defense):
    """Looks inside the model: per-class scores and the classes it flags as backdoor targets."""

    kind = "inspection"

    @staticmethod
    def inspection_metrics(scores: dict[str, Any], flagged: list[int] | None, inputs: DefenseInput) -> dict[str, Any]:
        """See :func:`siba.defenses.metrics.inspection_metrics`."""
        return inspection_metrics(scores, flagged, inputs.trigger)


class RepairDefense(Defense):
    """Returns a repaired model (``artifacts['model']``, saved as ``<out_dir>/model.safetensors``):
    BA and ASR on the test set before and after."""

    kind = "repair"
    min_val = 1

    @staticmethod
    def repair_metrics(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """See :func:`siba.defenses.metrics.repair_metrics`."""
        return repair_metrics(before, after)


class DetectionDefense(Defense):
    """Scores every input (higher: more suspicious) and flags those at or above a threshold.

    Subclasses implement :meth:`scores` and :meth:`threshold` (from the clean validation subset
    or a fixed value, never from the test set); the base scores the clean test images and the
    triggered test images the attack counts, and computes every detection metric.
    """

    kind = "detection"
    needs_trigger = True
    score_name: ClassVar[str] = "score"

    def __init__(self, *, batch_size: int = 256, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.batch_size = check_int(batch_size, "batch_size", 1)

    def scores(self, model: nn.Module, images: torch.Tensor, device: torch.device, *, progress: bool | None,
               desc: str, generator: torch.Generator, context: dict[str, Any]) -> torch.Tensor:
        """Suspicion scores (float64, CPU) of float ``[0,1]`` images."""
        raise NotImplementedError

    def threshold(self, model: nn.Module, inputs: DefenseInput, device: torch.device, progress: bool | None,
                  generator: torch.Generator, context: dict[str, Any]) -> float:
        """The flagging threshold (``score ≥ threshold`` is flagged), fixed before the test set is seen."""
        raise NotImplementedError

    def prepare(self, model: nn.Module, inputs: DefenseInput, device: torch.device,
                generator: torch.Generator) -> dict[str, Any]:
        """What the scoring needs beyond the images (STRIP's overlay pool); a dict passed as ``context``."""
        return {}

    def figures(self, out: Path, clean: torch.Tensor, poison: torch.Tensor, threshold: float,
                context: dict[str, Any]) -> list[str]:
        return []

    def detail(self, clean: torch.Tensor, poison: torch.Tensor, threshold: float,
               context: dict[str, Any]) -> dict[str, Any]:
        """Defense-specific extras for the result."""
        return {}

    def _run(self, inputs, model, device, out, progress, log):
        from .metrics import detection_metrics

        g = torch.Generator().manual_seed(self.seed)
        context = self.prepare(model, inputs, device, g)
        thr = float(self.threshold(model, inputs, device, progress, g, context))
        test = inputs.test_set
        mark = inputs.trigger.to(device)
        idx, labels = poisoned_inputs(test, mark)
        if idx.numel() == 0:
            raise SibaError("the trigger attacks none of the test images (every one is of the target class)")
        clean_scores = self.scores(model, test.images, device, progress=progress, desc=f"{self.name}: clean",
                                   generator=g, context=context)
        poison_scores = self.scores(model, _Triggered(test.images[idx], mark), device, progress=progress,
                                    desc=f"{self.name}: poisoned", generator=g, context=context)
        clean_pred = predict_logits(model, test.images, device, self.batch_size).argmax(1)
        poison_pred = predict_logits(model, test.images[idx], device, self.batch_size, mark.apply).argmax(1)
        counted, success = attack_success(mark, poison_pred, labels, clean_pred[idx])
        metrics = detection_metrics(clean_scores, poison_scores, thr, poison_hits=success & counted,
                                    clean_correct=clean_pred == test.labels)
        figures = self.figures(out, clean_scores, poison_scores, thr, context)
        return {"metrics": metrics, "score": self.score_name, "figures": figures,
                **self.detail(clean_scores, poison_scores, thr, context)}


class _Triggered:
    """A lazily triggered view of uint8 images (:func:`float_batch` applies the trigger per batch)."""

    def __init__(self, images: torch.Tensor, mark: Any) -> None:
        self.images, self.mark = images, mark
        self.shape = images.shape

    def __len__(self) -> int:
        return int(self.images.shape[0])


def float_batch(images: Any, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Images ``start:stop`` of a uint8 tensor, a float ``[0,1]`` tensor or a triggered view
    (the trigger applied to them), as float ``[0,1]`` on ``device``."""
    if isinstance(images, _Triggered):
        return images.mark.apply(images.images[start:stop].to(device).float().div_(255))
    x = images[start:stop].to(device)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()
