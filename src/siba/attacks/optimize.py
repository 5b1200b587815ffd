"""The SIBA optimisation (paper §III-B, Algorithm 1) and its L0 projection (Lemma 1).

Minimise the clamped cross-entropy towards the target on a frozen surrogate over
``δ`` with ``||m⊙δ||_0 ≤ k`` (pixels) and ``||δ||_∞ ≤ ε``, by alternating projected
sign steps: ``δ ← clip((δ − α·sign(g))⊙m, −ε, ε)``; the mask ``m`` is re-selected every
``T`` passes, either from the gradient's saliency (the authors' reference code) or by
the paper's Lemma-1 projection of the updated trigger (ties, such as every pixel at the
first selection from ``δ = 0``, broken by the gradient's saliency), and the pass with the
lowest mean loss is kept. The same routine with a fixed random mask is the Sparse baseline,
and with ``k = H×W`` the TUAP baseline.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import DeviceLoader
from ..errors import SibaError
from ..runtime import autocast, resolve_precision

MASK_RULES = ("gradient", "projection")


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
    delta: torch.Tensor
    mask: torch.Tensor
    best_pass: int
    best_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


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
) -> OptimizeResult:
    """Run the alternating projected optimisation; returns the lowest-loss pass's ``(δ, m)``.

    ``images`` are uint8 ``N×C×H×W`` (moved to ``device`` once), ``labels`` their classes.
    With ``fixed_mask`` the mask never changes (the Sparse baseline). ``snapshot_at`` lists
    pass counts after which the best ``(δ, m)`` so far is kept in ``snapshots`` (for studies
    of how many passes are needed).
    """
    if mask_rule not in MASK_RULES:
        raise SibaError(f"unknown mask rule {mask_rule!r} (use {' or '.join(MASK_RULES)})")
    dev = torch.device(device)
    prec = resolve_precision(precision, dev)
    c, h, w = images.shape[1:]
    surrogate = surrogate.to(dev).eval()
    grads_were = [p.requires_grad for p in surrogate.parameters()]
    for p in surrogate.parameters():  # only the input gradient is needed
        p.requires_grad_(False)
    loader = DeviceLoader(images.to(dev), labels.to(dev), batch_size, shuffle=True, seed=seed,
                          channels_last=True)
    delta = torch.zeros(c, h, w, device=dev)
    mask = fixed_mask.to(dev).float() if fixed_mask is not None else torch.zeros(h, w, device=dev)
    best = OptimizeResult(delta.clone(), mask.clone(), -1, math.inf)
    bound = float32_at_most(eps)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=passes, desc="optimising trigger", unit="pass", leave=False)
    n = images.shape[0]
    try:
        for p in range(passes):
            loader.set_epoch(p)
            tot_loss = torch.zeros((), device=dev)
            tot_hit = torch.zeros((), device=dev)
            for b, (x, y) in enumerate(loader):
                t = (y + 1) % num_classes if all_to_all else torch.full_like(y, target)
                pert = (mask * delta).detach().requires_grad_(True)
                with autocast(dev, prec):
                    logits = surrogate((x + pert).clamp(0, 1))
                ce = F.cross_entropy(logits.float(), t, reduction="none").clamp(max=beta)
                (g,) = torch.autograd.grad(ce.mean(), pert)
                step = delta - alpha * g.sign()
                if fixed_mask is None and b == 0 and p % remask_every == 0:
                    saliency = g.abs().sum(0)
                    mask = topk_mask(saliency, k) if mask_rule == "gradient" else l0_support(step, k, saliency)
                delta = (step * mask).clamp_(-bound, bound)
                tot_loss += ce.detach().sum()
                tot_hit += (logits.detach().argmax(1) == t).sum()
            mean_loss = tot_loss.item() / n
            row = {"pass": p + 1, "loss": mean_loss, "surrogate_success": tot_hit.item() / n}
            best.history.append(row)
            if mean_loss < best.best_loss:
                best.delta, best.mask, best.best_pass, best.best_loss = delta.clone(), mask.clone(), p + 1, mean_loss
            if p + 1 in snapshot_at:
                best.snapshots[p + 1] = (best.delta.clone(), best.mask.clone())
            if bar is not None:
                bar.update()
                bar.set_postfix(loss=f"{mean_loss:.3f}", success=f"{row['surrogate_success']:.3f}")
            if log is not None:
                log(f"pass {p + 1}/{passes}  loss {mean_loss:.4f}  surrogate success {row['surrogate_success']:.4f}")
    finally:
        if bar is not None:
            bar.close()
        for prm, req in zip(surrogate.parameters(), grads_were):
            prm.requires_grad_(req)
    return best
