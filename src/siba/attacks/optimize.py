"""The SIBA optimisation (paper §III-B, Algorithm 1) and its L0 projection (Lemma 1).

Minimise the clamped cross-entropy towards the target on a frozen surrogate over
``δ`` with ``||m⊙δ||_0 ≤ k`` (pixels) and ``||δ||_∞ ≤ ε``, by alternating projected
sign steps: ``δ ← clip((δ − α·sign(g))⊙m, −ε, ε)``; the mask ``m`` is re-selected every
``T`` passes, either from the gradient's saliency (the authors' reference code) or by
the paper's Lemma-1 projection of the updated trigger (ties, such as every pixel at the
first selection from ``δ = 0``, broken by the gradient's saliency), and the pass with the
lowest mean loss is kept. The same routine with a fixed random mask is the Sparse baseline,
and with ``k = H×W`` the TUAP baseline.

A run can write a checkpoint after every pass and continue from it; the continued run ends
bit-identical to an uninterrupted one (in fp32 on CPU), because pass ``p`` depends only on
``(δ, m)`` after pass ``p − 1`` and on an order of the images seeded by ``(seed, p)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import DeviceLoader, random_crop_flip
from ..errors import SibaError
from ..runtime import (autocast, check_checkpoint_settings, load_tensors, resolve_precision, save_tensors,
                       settings_digest)

MASK_RULES = ("gradient", "projection")
CHECKPOINT_FORMAT = 1  # the layout of an optimisation checkpoint (see :func:`optimize_trigger`)


def float32_at_most(value: float) -> float:
    """The largest float32 that is ≤ ``value`` (so a float32 clip to it keeps a float64 budget)."""
    v = torch.tensor(value, dtype=torch.float32)
    if float(v) > value:
        v = torch.nextafter(v, torch.tensor(-float("inf")))
    return float(v)


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A float {0,1} mask (same shape as ``scores``) of the ``k`` largest entries."""
    flat = scores.reshape(-1)
    k = min(int(k), flat.numel())
    mask = torch.zeros_like(flat, dtype=torch.float32)
    if k > 0:
        mask[flat.float().topk(k).indices] = 1.0
    return mask.view_as(scores)


def l0_support(v: torch.Tensor, k: int, tie_break: torch.Tensor | None = None) -> torch.Tensor:
    """The H×W {0,1} mask of the pixels Lemma 1's projection of ``v`` (C×H×W) keeps.

    These are the ``k`` pixels with the largest ``Σ_c v_c²``. Where pixels tie at the
    boundary, every choice is an exact projection; ``tie_break`` (H×W, larger first)
    decides among them instead of the order of memory. It matters at the first selection
    of the optimisation, where ``δ = 0`` and every pixel of the step ``−α·sign(g)`` has
    the same energy.
    """
    energy = v.pow(2).sum(0)
    if tie_break is None:
        return topk_mask(energy, k)
    flat, order = energy.reshape(-1), tie_break.reshape(-1).argsort(descending=True, stable=True)
    keep = order[flat[order].argsort(descending=True, stable=True)[: min(int(k), flat.numel())]]
    mask = torch.zeros(flat.numel(), device=v.device)
    mask[keep] = 1.0
    return mask.view_as(energy)


def l0_project(v: torch.Tensor, k: int, tie_break: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean projection of ``v`` (C×H×W) onto ``{u : at most k pixels non-zero}`` (Lemma 1).

    A pixel is the group of its C channel values; the projection keeps the ``k`` pixels
    with the largest ``Σ_c v_c²`` (:func:`l0_support`) and zeroes the rest.
    """
    return v * l0_support(v, k, tie_break)


def random_mask(shape: tuple[int, int], k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct pixel positions of an H×W grid, chosen uniformly (seeded)."""
    h, w = shape
    mask = torch.zeros(h * w)
    mask[torch.randperm(h * w, generator=generator)[:k]] = 1.0
    return mask.view(h, w)


@dataclass
class OptimizeResult:
    """The lowest-loss pass's ``(δ, m)``, which pass it was (1-based) and its mean loss, a row per
    pass (``pass``, ``loss``, ``surrogate_success``), and the snapshots asked for."""

    delta: torch.Tensor
    mask: torch.Tensor
    best_pass: int
    best_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A 16-hex SHA-256 of named tensors: their names, dtypes, shapes and values."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().to("cpu").contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: any dtype, bf16 included
    return h.hexdigest()[:16]


def _check_checkpoint(path: Path, state: Any, settings: dict[str, Any]) -> None:
    """Refuse an optimisation checkpoint made with other settings: a one-line error naming the first."""
    redo = f"use another --out or the same settings (or delete {path} to start afresh)"
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or \
            not isinstance(state.get("settings"), dict):
        raise SibaError(f"{path} is not a trigger-optimisation checkpoint of this siba; {redo}")
    check_checkpoint_settings(f"the optimisation checkpoint {path}", state, settings, redo,
                              {"surrogate": ("with another surrogate", "weights"),
                               "images": ("on other images", "fingerprint")})


def optimize_trigger(
    surrogate: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int,
    eps: float,
    alpha: float,
    beta: float,
    passes: int,
    remask_every: int,
    batch_size: int,
    num_classes: int,
    target: int = 0,
    all_to_all: bool = False,
    mask_rule: str = "gradient",
    fixed_mask: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    seed: int = 0,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    snapshot_at: tuple[int, ...] = (),
    checkpoint: str | Path | None = None,
    identity: dict[str, Any] | None = None,
    augment_pad: int = 0,
    augment_flip: bool = False,
) -> OptimizeResult:
    """Run the alternating projected optimisation; returns the lowest-loss pass's ``(δ, m)``.

    ``images`` are uint8 ``N×C×H×W`` (moved to ``device`` once), ``labels`` their classes.
    With ``fixed_mask`` the mask never changes (the Sparse baseline). ``snapshot_at`` lists
    pass counts after which the best ``(δ, m)`` so far is kept in ``snapshots`` (for studies
    of how many passes are needed). Each pass's ``surrogate_success`` is the share of the
    images the surrogate sends to their target with the pass's trigger, counted over the images
    not of the target class for an all-to-one attack (all images for all-to-all; ``None`` when
    there are none).

    ``augment_pad`` / ``augment_flip`` make the trigger augmentation-aware: the loss becomes an
    expectation over the victim's augmentation, each poisoned image ``clip(x + m⊙δ)`` being
    randomly pad-cropped (zero padding, offsets uniform in ``−pad..pad``) and flipped — as the
    victim will see it — before the surrogate, with a fresh draw per image and batch (seeded by
    ``(seed, pass)``, so a resumed run is bit-identical). The gradient flows through the crop
    and the flip back to ``δ``; the mask re-selection and the budgets are unchanged.

    A non-finite loss or trigger (a surrogate with NaN weights, an overflow) ends the run with a
    one-line :class:`SibaError` naming the pass; nothing is returned and no checkpoint is
    written for that pass.

    ``checkpoint``: a ``.safetensors`` file written atomically after every pass with what the
    next pass needs (the current and best ``(δ, m)``, the best pass and loss, the history, the
    snapshots and the next pass's index) and the settings that decide the result with their
    digest: ``k``, ``eps``, ``alpha``, ``beta``, ``passes``, ``remask_every``, ``batch_size``,
    the mask rule, the fixed mask, ``seed``, the target rule, the class count, the precision as
    resolved, the device type, a hash of the surrogate's ``state_dict`` and of the images and
    labels, and ``identity`` (extra JSON-able settings, such as the name of the attack).
    When the file exists, the run continues from it, and ends bit-identical to an uninterrupted
    run (fp32 on CPU); a file made with other settings is a one-line error naming the first
    difference (delete it to start afresh). The file is left in place at the end: the caller
    removes it once the result is saved.
    """
    if mask_rule not in MASK_RULES:
        raise SibaError(f"unknown mask rule {mask_rule!r} (use {' or '.join(MASK_RULES)})")
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise SibaError(f"passes must be a whole number ≥ 1, got {passes!r}")
    dev = torch.device(device)
    prec = resolve_precision(precision, dev)
    c, h, w = images.shape[1:]
    ckpt = Path(checkpoint) if checkpoint is not None else None
    settings: dict[str, Any] = {}
    if ckpt is not None:
        settings = {"k": int(k), "eps": float(eps), "alpha": float(alpha), "beta": float(beta), "passes": passes,
                    "remask_every": int(remask_every), "batch_size": int(batch_size), "mask_rule": mask_rule,
                    "fixed_mask": tensors_digest([("mask", fixed_mask.float())]) if fixed_mask is not None else None,
                    "seed": int(seed), "target_rule": "all-to-all" if all_to_all else "all-to-one",
                    "target": None if all_to_all else int(target), "num_classes": int(num_classes),
                    "precision": prec, "device": dev.type,
                    "surrogate": tensors_digest(surrogate.state_dict().items()),
                    "images": tensors_digest([("images", images), ("labels", labels)]),
                    **({"augment_pad": int(augment_pad), "augment_flip": bool(augment_flip)}
                       if augment_pad or augment_flip else {})}
        settings.update({key: v for key, v in (identity or {}).items() if key not in settings})
        settings = json.loads(json.dumps(settings))
    surrogate = surrogate.to(dev).eval()
    grads_were = [p.requires_grad for p in surrogate.parameters()]
    for p in surrogate.parameters():  # only the input gradient is needed
        p.requires_grad_(False)
    loader = DeviceLoader(images.to(dev), labels.to(dev), batch_size, shuffle=True, seed=seed,
                          channels_last=True)
    delta = torch.zeros(c, h, w, device=dev)
    mask = fixed_mask.to(dev).float() if fixed_mask is not None else torch.zeros(h, w, device=dev)
    best = OptimizeResult(delta.clone(), mask.clone(), -1, math.inf)
    start = 0
    if ckpt is not None and ckpt.is_file():
        tensors, meta = load_tensors(ckpt)
        state = meta.get("siba_optimize_checkpoint")
        _check_checkpoint(ckpt, state, settings)
        start = int(state["next_pass"])
        delta, mask = tensors["delta"].to(dev), tensors["mask"].to(dev)
        best = OptimizeResult(tensors["best_delta"].to(dev), tensors["best_mask"].to(dev), int(state["best_pass"]),
                              float(state["best_loss"]), list(state["history"]))
        for q in state.get("snapshots", []):
            best.snapshots[int(q)] = (tensors[f"snapshot.{q}.delta"].to(dev), tensors[f"snapshot.{q}.mask"].to(dev))
        if log is not None:
            log(f"resuming the trigger optimisation after pass {start} of {passes} ({ckpt})")
    bound = float32_at_most(eps)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=passes, initial=start, desc="optimising trigger", unit="pass", leave=False)
    n = images.shape[0]
    # the images whose success counts: all-to-one triggers cannot "succeed" on images of the target class
    counted = n if all_to_all else int((labels != target).sum())
    try:
        for p in range(start, passes):
            loader.set_epoch(p)  # the order of pass p derives from (seed, p) alone
            aug = torch.Generator().manual_seed(seed * 1_000_003 + p + 1) if augment_pad or augment_flip else None
            tot_loss = torch.zeros((), device=dev)
            tot_hit = torch.zeros((), device=dev)
            for b, (x, y) in enumerate(loader):
                t = (y + 1) % num_classes if all_to_all else torch.full_like(y, target)
                pert = (mask * delta).detach().requires_grad_(True)
                xp = (x + pert).clamp(0, 1)
                if aug is not None:  # the poisoned image as the victim's augmentation will show it
                    xp = random_crop_flip(xp, augment_pad, augment_flip, aug)
                with autocast(dev, prec):
                    logits = surrogate(xp)
                ce = F.cross_entropy(logits.float(), t, reduction="none").clamp(max=beta)
                (g,) = torch.autograd.grad(ce.mean(), pert)
                step = delta - alpha * g.sign()
                if fixed_mask is None and b == 0 and p % remask_every == 0:
                    saliency = g.abs().sum(0)
                    mask = topk_mask(saliency, k) if mask_rule == "gradient" else l0_support(step, k, saliency)
                delta = (step * mask).clamp_(-bound, bound)
                tot_loss += ce.detach().sum()
                hit = logits.detach().argmax(1) == t
                tot_hit += (hit if all_to_all else hit & (y != target)).sum()
            mean_loss = tot_loss.item() / n
            if not (math.isfinite(mean_loss) and bool(torch.isfinite(delta).all())):
                what = f"loss is {mean_loss}" if not math.isfinite(mean_loss) else "gradient is not finite"
                raise SibaError(f"trigger optimisation failed at pass {p + 1}: the surrogate's {what} (are its "
                                "weights finite? in bf16, try precision fp32); no trigger was made")
            success = tot_hit.item() / counted if counted else None
            row = {"pass": p + 1, "loss": mean_loss, "surrogate_success": success}
            best.history.append(row)
            if mean_loss < best.best_loss:
                best.delta, best.mask, best.best_pass, best.best_loss = delta.clone(), mask.clone(), p + 1, mean_loss
            if p + 1 in snapshot_at:
                best.snapshots[p + 1] = (best.delta.clone(), best.mask.clone())
            if ckpt is not None:
                _save_checkpoint(ckpt, p + 1, delta, mask, best, settings)
            shown = "n/a" if success is None else f"{success:.4f}"
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{mean_loss:.3f}", success=shown)
            if log is not None:
                log(f"pass {p + 1}/{passes}  loss {mean_loss:.4f}  surrogate success {shown}")
    finally:
        if bar is not None:
            bar.close()
        for prm, req in zip(surrogate.parameters(), grads_were):
            prm.requires_grad_(req)
    return best


def _save_checkpoint(path: Path, next_pass: int, delta: torch.Tensor, mask: torch.Tensor, best: OptimizeResult,
                     settings: dict[str, Any]) -> None:
    """Write what the pass ``next_pass`` (0-based) needs to continue, atomically, as one safetensors file."""
    tensors = {"delta": delta, "mask": mask, "best_delta": best.delta, "best_mask": best.mask}
    for q, (d, m) in best.snapshots.items():
        tensors[f"snapshot.{q}.delta"], tensors[f"snapshot.{q}.mask"] = d, m
    state = {"format": CHECKPOINT_FORMAT, "settings": settings, "digest": settings_digest(settings),
             "next_pass": next_pass,
             "best_pass": best.best_pass, "best_loss": best.best_loss, "history": best.history,
             "snapshots": sorted(best.snapshots)}
    save_tensors(path, tensors, {"siba_optimize_checkpoint": state})
