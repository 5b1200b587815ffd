"""One training loop for every model siba trains: surrogates, victims and defenses.

SGD (momentum, Nesterov, weight decay) with the paper's step schedule or a one-cycle
schedule; data held on the device as uint8 and augmented per batch there; bf16 autocast
and ``channels_last`` where they are fast; a CSV row and an atomic checkpoint after every
epoch; ``resume=True`` continues an interrupted run and ends where an uninterrupted run
with the same settings ends (bit for bit on CPU), and refuses a checkpoint made with other
settings, another model or other data.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data.dataset import ImageSet
from ..data.loader import DeviceLoader
from ..errors import SibaError
from ..models import load_state, model_spec, save_model
from ..runtime import (atomic_path, autocast, check_precision, check_seed, load_tensors, pick_device, resolve_precision,
                       save_tensors, setting_difference, settings_digest, setup_threads, show_setting, write_json)


_FLOATS = ("lr", "momentum", "weight_decay", "gamma", "warmup", "label_smoothing")
_INTS = ("epochs", "batch_size", "crop_pad", "seed", "eval_every", "eval_batch_size")
_BOOLS = ("nesterov", "flip", "channels_last", "tta")
MAX_EPOCHS = 1_000_000  # far beyond any run; past ~1e308 the schedule's float arithmetic overflows
MAX_CROP_PAD = 256  # a pad beyond this runs out of memory long before it could mean anything


def _number(value: Any, name: str) -> float:
    """A finite number; a numeric string such as ``"1e-3"`` becomes a float (a number stays as given)."""
    try:
        out = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except (ValueError, OverflowError):
        out = math.nan
    if not math.isfinite(out):
        raise SibaError(f"{name} must be a number, got {value!r}")
    return out if isinstance(value, str) else value


def whole_number(value: Any, name: str) -> int:
    """An int from an int, a whole float (``1.0``) or a string holding a whole number (``"100"``, ``"1e2"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, float) and number.is_integer():
        return int(number)
    raise SibaError(f"{name} must be a whole number, got {value!r}")


@dataclass
class TrainConfig:
    """Settings of a training run (defaults: the paper's CIFAR-10 recipe, 100 epochs)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "step"  # step | onecycle | constant
    milestones: list[int] | None = None  # step: epochs where lr is divided by 1/gamma; default 60% and 90%
    gamma: float = 0.1
    warmup: float = 0.2  # onecycle: share of the steps spent rising to lr
    label_smoothing: float = 0.0
    crop_pad: int = 4
    flip: bool = True
    precision: str = "auto"  # auto | bf16 | fp32
    channels_last: bool = True
    seed: int = 0
    eval_every: int = 1  # evaluate on the test set every N epochs (0: only at the end)
    eval_batch_size: int = 1024
    tta: bool = False  # test accuracy from the logits of each image plus its mirror image (airbench's TTA)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every setting; numbers given as strings (YAML reads ``1e-3`` as one) become numbers."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _FLOATS:
                setattr(self, f.name, _number(value, f.name))
            elif f.name in _INTS:
                setattr(self, f.name, whole_number(value, f.name))
            elif f.name in _BOOLS and not isinstance(value, bool):
                raise SibaError(f"{f.name} must be true or false, got {value!r}")
        if self.epochs > MAX_EPOCHS:
            raise SibaError(f"epochs must be at most {MAX_EPOCHS:,}, got {self.epochs!r}")
        if self.crop_pad > MAX_CROP_PAD:
            raise SibaError(f"crop padding must be at most {MAX_CROP_PAD} pixels, got {self.crop_pad!r}")
        check_seed(self.seed)
        if self.milestones is not None:
            if not isinstance(self.milestones, (list, tuple)):
                raise SibaError(f"milestones must be a list of epochs, got {self.milestones!r}")
            self.milestones = [whole_number(m, "milestones") for m in self.milestones]
            if any(m < 0 for m in self.milestones):
                raise SibaError(f"milestones must be epochs ≥ 0, got {self.milestones}")
        if self.epochs < 0:
            raise SibaError(f"epochs must be a non-negative integer, got {self.epochs!r}")
        if self.batch_size < 1:
            raise SibaError(f"batch size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise SibaError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise SibaError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise SibaError(f"weight decay must be ≥ 0, got {self.weight_decay}")
        if self.schedule not in ("step", "onecycle", "constant"):
            raise SibaError(f"unknown schedule {self.schedule!r} (use step, onecycle or constant)")
        if not self.gamma > 0:
            raise SibaError(f"gamma (the step schedule's lr factor) must be positive, got {self.gamma}")
        if not 0 <= self.warmup <= 1:
            raise SibaError(f"warmup (the one-cycle share of steps rising to lr) must be in [0, 1], got {self.warmup}")
        check_precision(self.precision)
        if not 0 <= self.label_smoothing < 1:
            raise SibaError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.crop_pad < 0:
            raise SibaError(f"crop padding must be ≥ 0, got {self.crop_pad}")
        if self.eval_every < 0:
            raise SibaError(f"eval_every must be ≥ 0 (0: evaluate at the end only), got {self.eval_every}")
        if self.eval_batch_size < 1:
            raise SibaError(f"eval batch size must be positive, got {self.eval_batch_size}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TrainConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(repr(k) if not isinstance(k, str) or not k.isprintable() else k for k in d if k not in known)
        if unknown:
            raise SibaError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def resolved_milestones(self) -> list[int]:
        if self.milestones is not None:
            return sorted(int(m) for m in self.milestones)
        return [int(round(self.epochs * 0.6)), int(round(self.epochs * 0.9))]

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate for global step ``step`` (a pure function: resuming needs no state)."""
        total = max(1, self.epochs * steps_per_epoch)
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "step":
            epoch = step // max(1, steps_per_epoch)
            return self.lr * self.gamma ** sum(epoch >= m for m in self.resolved_milestones())
        # one-cycle: linear rise from lr/10 to lr, then linear decay to 0
        peak = max(1, int(self.warmup * total))
        if step < peak:
            return self.lr * (0.1 + 0.9 * step / peak)
        return self.lr * max(0.0, (total - step) / max(1, total - peak))


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, device: torch.device | str | None = None,
            batch_size: int = 1024, precision: str = "auto", transform: Callable | None = None,
            channels_last: bool = True, tta: bool = False) -> torch.Tensor:
    """Predicted labels for uint8 or float images (``transform`` maps a float batch first).

    ``tta``: classify by the summed logits of each image and its horizontal mirror.
    """
    device = pick_device(device) if device is not None else next(model.parameters()).device
    prec = resolve_precision(precision, device)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(device, non_blocking=True)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if transform is not None:
            x = transform(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, prec):
            logits = model(x).float()
            if tta:
                logits = logits + model(x.flip(3)).float()
            out.append(logits.argmax(1))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=device)


def accuracy(model: nn.Module, data: ImageSet, **kw: Any) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (a fraction in [0, 1])."""
    if len(data) == 0:
        return float("nan")
    pred = predict(model, data.images, **kw)
    return (pred.cpu() == data.labels).float().mean().item()


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"opt.momentum.{i}"] = buf
    # The whole state rides in the safetensors metadata, so the checkpoint is one atomic file;
    # the JSON beside it is a readable copy.
    save_tensors(path.with_suffix(".safetensors"), tensors, {"state": state})
    write_json(path.with_suffix(".json"), state)


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the state of the training checkpoint ``path`` (without suffix)."""
    tensors, meta = load_tensors(path.with_suffix(".safetensors"))
    state = meta.get("state")
    if not isinstance(state, dict):
        raise SibaError(f"{path.with_suffix('.safetensors')} is not a siba training checkpoint")
    return tensors, state


def _load_checkpoint(path: Path, tensors: dict[str, torch.Tensor], model: nn.Module,
                     opt: torch.optim.Optimizer) -> None:
    """Put a checked checkpoint's weights into ``model`` and its momentum buffers into ``opt``."""
    load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(path))
    params = opt.param_groups[0]["params"]
    for i, p in enumerate(params):
        buf = tensors.get(f"opt.momentum.{i}")
        if buf is not None:
            opt.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def read_metrics(path: str | Path) -> list[dict[str, float | None]]:
    """The rows of a ``metrics.csv`` written by :func:`train` (``[]`` when there is none); blanks are None."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: (float(v) if v else None) for k, v in row.items()} for row in csv.DictReader(f)]


REPORT_ONLY = ("eval_every", "eval_batch_size", "tta")  # TrainConfig fields that change only what is reported
CHECKPOINT_FORMAT = 2  # 2: the checkpoint records its run's settings and their digest


def run_settings(cfg: TrainConfig, precision: str, device: torch.device, spec: dict[str, Any], train_set: ImageSet,
                 test_set: ImageSet | None, *, loss_hook_id: str | None = None) -> dict[str, Any]:
    """The settings that decide what a training run computes, in the order a mismatch is reported.

    The model spec (architecture, classes, options); every :class:`TrainConfig` field but those
    in :data:`REPORT_ONLY`, with ``precision`` as it resolved on ``device`` (``auto`` becomes
    ``bf16`` or ``fp32``); the device type; the fingerprints of the training and test data; and,
    for a run with a loss hook (see :func:`train`), the hook's identity as ``loss_hook`` (absent
    for a run with the plain cross-entropy, so such a run's settings and digest are as before).
    Returned as it reads back from JSON (tuples become lists).
    """
    out: dict[str, Any] = {"model": spec}
    for f in fields(cfg):
        if f.name not in REPORT_ONLY:
            value = getattr(cfg, f.name)
            out[f.name] = float(value) if f.name in _FLOATS else value
    out["precision"] = precision
    out["device"] = device.type
    out["train_data"] = train_set.fingerprint()
    out["test_data"] = test_set.fingerprint() if test_set is not None else None
    if loss_hook_id is not None:
        out["loss_hook"] = loss_hook_id
    return json.loads(json.dumps(out))


def _model_difference(old: Any, new: dict[str, Any]) -> str:
    """The first difference between two model specs, as ``key=old, not key=new``."""
    old = old if isinstance(old, dict) else {}
    for key in ("arch", "num_classes"):
        if old.get(key) != new.get(key):
            return f"{key}={show_setting(old.get(key))}, not {key}={show_setting(new.get(key))}"
    old_kw, new_kw = old.get("kwargs") or {}, new.get("kwargs") or {}
    for key in sorted(set(old_kw) | set(new_kw)):
        if old_kw.get(key, "default") != new_kw.get(key, "default"):
            was, now = old_kw.get(key, "default"), new_kw.get(key, "default")
            return f"{key}={show_setting(was)}, not {key}={show_setting(now)}"
    return "another model spec"


def check_resume(state: dict[str, Any], settings: dict[str, Any], cfg: TrainConfig, where: Path) -> None:
    """Refuse to resume from a checkpoint whose ``state`` was made with other ``settings``.

    A one-line :class:`SibaError` names the first differing setting (in the order of
    :func:`run_settings`) with both values. A different ``epochs`` is allowed only when both
    runs use ``schedule: constant`` and the checkpoint has not trained past the new ``epochs``.
    """
    redo = "use another --out or the same settings"
    old = state.get("settings")
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(old, dict) or "digest" not in state:
        raise SibaError(f"the checkpoint in {where} was made by an older siba that did not record its settings, so "
                        f"it cannot be checked; train into another --out (or delete {where}/checkpoint.* to start "
                        "over)")
    if state["digest"] == settings_digest(settings) and old == settings:
        return
    data = {"train_data": ("on other training data", "fingerprint"), "test_data": ("on other test data", "fingerprint")}
    for key, new in settings.items():
        was = old.get(key)
        if was == new:
            continue
        if key == "model":
            raise SibaError(f"the checkpoint in {where} is of another model ({_model_difference(was, new)}); {redo}")
        if key == "loss_hook":
            raise SibaError(f"the checkpoint in {where} was made with {_hook_name(was)}, not {_hook_name(new)}; {redo}")
        if key == "epochs" and settings["schedule"] == "constant" and old.get("schedule") == "constant":
            done = int(state.get("epoch", 0))
            if done > new:
                raise SibaError(f"the checkpoint in {where} has trained {done} epochs, more than epochs={new}; "
                                f"use another --out or epochs ≥ {done}")
            continue  # extending (or shortening, within what is trained) a constant-lr run
        why = ""
        if key == "epochs":
            why = ("; only a run with schedule: constant can be extended (the step and onecycle learning rates "
                   "depend on the number of epochs)")
        elif key == "precision" and cfg.precision == "auto":
            why = f" (auto resolves to {new} here)"
        raise SibaError(f"the checkpoint in {where} {setting_difference(key, was, new, data)}{why}; {redo}")
    if "loss_hook" in old and "loss_hook" not in settings:
        raise SibaError(f"the checkpoint in {where} was made with {_hook_name(old['loss_hook'])}, not "
                        f"{_hook_name(None)}; {redo}")
    if set(old) != set(settings):
        raise SibaError(f"the checkpoint in {where} was made with other settings "
                        f"({', '.join(sorted(set(old) ^ set(settings)))}); {redo}")


def _hook_name(hook_id: Any) -> str:
    """How a run's loss reads in an error: its hook's identity, or the plain cross-entropy."""
    return "the plain cross-entropy loss" if hook_id is None else f"the loss hook {show_setting(hook_id)}"


def _check_loss_hook(loss_hook: Any, loss_hook_id: Any) -> None:
    """One-line errors for a loss hook without its identity (or the other way round)."""
    if loss_hook is None:
        if loss_hook_id is not None:
            raise SibaError("loss_hook_id is given but no loss_hook")
        return
    if not callable(loss_hook):
        raise SibaError(f"loss_hook must be callable (logits, y, idx, epoch) -> loss, got {type(loss_hook).__name__}")
    if not isinstance(loss_hook_id, str) or not loss_hook_id.strip():
        raise SibaError(f"a loss_hook needs loss_hook_id, a non-empty string naming it (and its settings), got "
                        f"{loss_hook_id!r}")


def _stop_if_diverged(first_bad: int, epoch: int, steps: int, bar: Any) -> None:
    """A one-line error when batch ``first_bad`` (0-based; −1: none) of ``epoch`` had a non-finite loss."""
    if first_bad >= 0:
        if bar is not None:
            bar.close()
        raise SibaError(f"training diverged at epoch {epoch + 1}, batch {first_bad + 1} of {steps} (the loss is not "
                        "finite); lower the learning rate, or check the model's weights")


def _hook_loss(hook: Callable, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
    """The loss hook's loss for one batch, checked to be a scalar tensor (one-line error otherwise)."""
    loss = hook(logits, y, idx, epoch)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        what = f"a {tuple(loss.shape)} {loss.dtype} tensor" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise SibaError(f"the loss hook must return a scalar float tensor, got {what}")
    return loss.reshape(())


def train(
    model: nn.Module,
    train_set: ImageSet,
    test_set: ImageSet | None = None,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = "auto",
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    epoch_callback: Callable[[nn.Module, int], dict[str, float]] | None = None,
    eval_train_set: ImageSet | None = None,
    loss_hook: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    loss_hook_id: str | None = None,
    summary_extra: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set``; evaluate on ``test_set`` as the config says.

    With ``out_dir``: ``metrics.csv`` (a row per epoch), ``checkpoint.safetensors`` +
    ``checkpoint.json`` after each epoch, and at the end ``model.safetensors`` and
    ``summary.json``. ``epoch_callback(model, epoch)`` may return extra metrics for the
    epoch's row (an attack's ASR, say). ``eval_train_set`` is evaluated (without
    augmentation) at the end to report how well the model fits its training data.
    ``summary_extra`` is added to the summary as it is (the command that trained the model, say).

    ``resume=True`` continues from the checkpoint in ``out_dir`` (or starts afresh when there
    is none) and ends where an uninterrupted run ends. The checkpoint records the settings
    that decide the result (:func:`run_settings`: the model spec, every config field but
    ``eval_every``, ``eval_batch_size`` and ``tta``, the precision as resolved, the device
    type, and the fingerprints of the training and test data) with their digest; a
    checkpoint made with other settings, or by an older siba that did not record them, is
    refused with a one-line :class:`SibaError` naming the first difference, before anything
    is written. One difference is allowed: a larger ``epochs`` extends a run whose schedule
    is ``constant`` (its learning rate does not depend on the number of epochs, and each
    epoch's order and augmentation derive from ``(seed, epoch)``), and the extended run's
    weights are bit-identical to those of a run trained that long from the start. The
    ``step`` and ``onecycle`` learning rates depend on the total number of epochs, so their
    runs cannot be extended.

    ``loss_hook(logits, y, idx, epoch) -> loss`` replaces the mean cross-entropy (and
    ``label_smoothing``) when given: ``logits`` are the batch's logits in float32 (the hook runs
    outside autocast), ``y`` its labels, ``idx`` (int64, on the run's device) the batch's
    samples' indices in ``train_set``, ``epoch`` the 0-based epoch; it returns the scalar loss
    to minimise (ABL's local gradient ascent, or ``−CE`` to unlearn). ``loss_hook_id`` is then
    required: a string naming the hook and its settings (``"abl-lga/sample/gamma=0.5"``, say).
    It is recorded among the checkpoint's settings (``loss_hook`` in :func:`run_settings`), so a
    resume with another hook, or with a hook where the checkpoint had none (or the other way
    round), is refused; the caller must give a hook that computes something else another id.
    The reported ``train_loss`` is then the hook's loss.

    A non-finite loss stops the run at the batch where it first appears (on CPU; on other
    devices within 8 batches of it, to spare a synchronisation per batch) with a one-line
    error naming the epoch and batch; nothing of that epoch is written.
    """
    cfg = config or TrainConfig()
    cfg.validate()
    _check_loss_hook(loss_hook, loss_hook_id)
    if len(train_set) == 0:
        raise SibaError("the training set is empty")
    spec = model_spec(model)
    if spec["num_classes"] != train_set.num_classes:
        raise SibaError(f"the model has {spec['num_classes']} outputs but the data has {train_set.num_classes} classes")
    dev = pick_device(device)
    setup_threads()
    prec = resolve_precision(cfg.precision, dev)
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out_dir) if out_dir is not None else None

    torch.manual_seed(cfg.seed)
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, cfg)
    history: list[dict[str, float]] = []
    start_epoch, elapsed = 0, 0.0
    ckpt = out / "checkpoint" if out is not None else None
    settings = run_settings(cfg, prec, dev, spec, train_set, test_set,
                            loss_hook_id=loss_hook_id if loss_hook is not None else None) if out is not None else {}
    digest = settings_digest(settings)
    if resume and ckpt is not None and ckpt.with_suffix(".safetensors").is_file():
        tensors, state = _read_checkpoint(ckpt)
        check_resume(state, settings, cfg, out)  # before the model or any file is touched
        _load_checkpoint(ckpt, tensors, model, opt)
        start_epoch, history, elapsed = int(state["epoch"]), list(state["history"]), float(state.get("wall_s", 0.0))
        say(f"resuming from epoch {start_epoch} of {cfg.epochs} ({out})")
    elif out is not None and not resume and ckpt is not None and ckpt.with_suffix(".safetensors").is_file():
        say(f"note: {out} holds a checkpoint; starting afresh (pass resume to continue it)")

    loader = DeviceLoader(train_set.images.to(dev), train_set.labels.to(dev), cfg.batch_size, shuffle=True,
                          crop_pad=cfg.crop_pad, flip=cfg.flip, drop_last=len(train_set) > cfg.batch_size,
                          channels_last=cfg.channels_last, seed=cfg.seed, with_indices=loss_hook is not None)
    steps = len(loader)
    check_every = 1 if dev.type == "cpu" else 8  # batches between looks at the loss (each look synchronises)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    show = sys.stderr.isatty() if progress is None else progress

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        # every epoch's randomness derives from (seed, epoch): a resumed run replays it exactly
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        loader.set_epoch(epoch)
        model.train()
        tot_loss = torch.zeros((), device=dev)
        tot_correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)  # the first batch with a non-finite loss
        for i, batch in enumerate(loader):
            x, y = batch[0], batch[1]
            lr = cfg.lr_at(epoch * steps + i, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            if loss_hook is None:
                with autocast(dev, prec):
                    logits = model(x)
                    loss = loss_fn(logits.float(), y)
            else:
                with autocast(dev, prec):
                    logits = model(x)
                loss = _hook_loss(loss_hook, logits.float(), y, batch[2], epoch)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), i, first_bad)
            if (i + 1) % check_every == 0 or i + 1 == steps:
                _stop_if_diverged(int(first_bad.item()), epoch, steps, bar)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.detach() * y.shape[0]
            tot_correct += (logits.detach().argmax(1) == y).sum()
            seen += y.shape[0]
            if bar is not None:
                bar.update()
                if i % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}")
        if bar is not None:
            bar.close()
        if not math.isfinite(tot_loss.item()):  # finite batch losses whose sum overflows
            raise SibaError(f"training diverged at epoch {epoch + 1} (loss is {tot_loss.item()}); "
                            "lower the learning rate")
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr, "train_loss": tot_loss.item() / seen,
                                 "train_acc": tot_correct.item() / seen}
        last = epoch + 1 == cfg.epochs
        if test_set is not None and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            row["test_acc"] = accuracy(model, test_set, precision=cfg.precision, batch_size=cfg.eval_batch_size,
                                       tta=cfg.tta)
        if epoch_callback is not None:
            row.update(epoch_callback(model, epoch + 1))
        elapsed += time.perf_counter() - t0
        row["wall_s"] = round(elapsed, 2)
        history.append(row)
        say("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        if out is not None:
            _write_csv(out / "metrics.csv", history)
            assert ckpt is not None
            _save_checkpoint(ckpt, model, opt, {"format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "history": history,
                                                "wall_s": elapsed, "config": asdict(cfg), "model": spec,
                                                "settings": settings, "digest": digest})

    summary: dict[str, Any] = {"model": spec, "config": asdict(cfg), "device": str(dev), "precision": prec,
                               "epochs": cfg.epochs, "train_images": len(train_set), "wall_s": round(elapsed, 2)}
    if history:
        summary.update({k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "wall_s")})
    if test_set is not None:
        summary["test_acc"] = history[-1]["test_acc"] if history and "test_acc" in history[-1] else \
            accuracy(model, test_set, precision=cfg.precision, tta=cfg.tta)
    if eval_train_set is not None:
        summary["train_acc_clean"] = accuracy(model, eval_train_set, precision=cfg.precision)
    summary.update(summary_extra or {})  # e.g. the command that trained it
    if out is not None:
        save_model(model, out / "model.safetensors", classes=train_set.classes,
                   image_shape=list(train_set.image_shape), test_acc=summary.get("test_acc"))
        write_json(out / "summary.json", summary)
    return TrainResult(model, history, summary)
