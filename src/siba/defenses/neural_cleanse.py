"""Neural Cleanse (Wang et al., IEEE S&P 2019): reverse-engineer, for every class, the smallest
trigger that sends clean images to it; a backdoor target needs an abnormally small one.

For each class ``c`` a mask ``m`` (H×W) and a pattern ``p`` (C×H×W) are optimised, both through
``tanh`` so they stay in ``[0, 1]``: ``m = (tanh(θ_m) + 1)/2``, ``p = (tanh(θ_p) + 1)/2``, and
``x' = (1 − m)·x + m·p``. The loss is ``CE(f(x'), c) + λ·|m|₁`` over the clean validation images
(from the training set), Adam (lr 0.1, β = (0.5, 0.9)), a random start (seeded), as the reference
code (``bolunwang/backdoor``, ``visualizer.py``) does. ``λ`` follows its adaptive schedule:

- it starts at 0; once the attack success (the share of ``x'`` classified as ``c`` over an epoch)
  has reached ``attack_succ_threshold`` (0.99) for ``patience`` epochs, ``λ = init_cost`` (1e-3);
- then after every ``patience`` epochs in a row at or above the threshold ``λ ×= cost_multiplier``
  (1.5), and after every ``patience`` epochs in a row below it ``λ /= cost_multiplier ** 1.5``
  (the reference divides by a larger factor than it multiplies, so the schedule settles);
- the kept trigger is the smallest-norm mask of any epoch that reached the threshold (the last one
  when none did, recorded as ``reached: false``);
- early stop as in the reference: once λ has gone both up and down, and the best norm has not
  improved by more than ``1 − early_stop_threshold`` for ``early_stop_patience`` epochs
  (``5·patience``, the reference example's choice). ``early_stop: false`` turns it off.

An *epoch* here is one pass over at most ``max_images`` clean validation images in batches of
``batch_size``; the reference's epoch is ``mini_batch`` batches of 32 for up to 1,000 epochs
(about 31,000 steps per class). siba's CPU-friendly default is 30 epochs of 256 images in
batches of 64 (120 steps per class), with ``patience`` 3 — the schedule has the same shape
and the backdoor target of the tests' planted backdoor stands out (anomaly index > 2) while a
clean model's classes do not; raise ``epochs`` for a study.

The outlier test is the reference's: the anomaly index of class ``c`` is
``|n_c − median(n)| / (1.4826 · MAD(n))`` over the classes' mask L1 norms ``n``, and a class is
flagged when its norm lies **below** the median with an index above 2
(:func:`siba.defenses.metrics.mad_anomaly_index`). The result lists every class's norm and
index, the flagged classes, and (when the trigger is known) whether its target is flagged.

When the trigger is known and has pixels (``trigger_region``), ``scores.target_mask_on_trigger`` is the
share of the target class's reversed mask ``m`` that lies on the trigger's pixels or their mirror image
(``Σ_region m / Σ m``; a victim trained with horizontal flips met the trigger in both places), beside
``scores.trigger_region_share`` (that region's share of the image: what a mask spread evenly would
get): near 1, Neural Cleanse found the trigger where it is; near the region's share, it found another
small way into the target class (a flag then says the class is reachable, not where the trigger lies).

The reversed triggers are returned as :class:`~siba.attacks.BlendTrigger`\\ s (pattern ``p``,
opacity ``α = m``, target ``c``), which apply ``(1 − m)·x + m·p`` exactly as optimised, and are
saved as ``<out_dir>/reversed/class-<c>.safetensors`` (``Trigger.load`` reads them back). Figures:
``neural-cleanse.png`` (each class's norm and index) and ``neural-cleanse-triggers.png`` (each
class's mask, pattern and ``m·p``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import BlendTrigger
from ..errors import SibaError
from .base import (DefenseInput, InspectionDefense, check_bool, check_float, check_int, frozen, progress_bar,
                   register_defense, trigger_region, unfreeze)
from .figures import class_bars, image_grid
from .metrics import flagged_by_anomaly, mad_anomaly_index

TANH_EPS = 1e-7  # keeps atanh finite at the ends of [0, 1], as the reference's epsilon


@register_defense
class NeuralCleanse(InspectionDefense):
    """Neural Cleanse: reverse-engineer a minimal trigger per class; flag classes with abnormally small ones."""

    name = "neural-cleanse"
    description = "reverse-engineer a minimal trigger per class, flag abnormally small ones by MAD (Wang et al. 2019)"
    min_val = 1

    def __init__(self, *, epochs: int = 30, batch_size: int = 32, max_images: int = 320, lr: float = 0.1,
                 init_cost: float = 1e-3, cost_multiplier: float = 1.5, patience: int = 2,
                 attack_succ_threshold: float = 0.99, early_stop: bool = True, early_stop_threshold: float = 0.99,
                 early_stop_patience: int | None = None, anomaly_threshold: float = 2.0,
                 classes: list[int] | None = None, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.epochs = check_int(epochs, "epochs", 1)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.max_images = check_int(max_images, "max_images", 1)
        self.lr = check_float(lr, "lr", 0, low_open=True)
        self.init_cost = check_float(init_cost, "init_cost", 0, low_open=True)
        self.cost_multiplier = check_float(cost_multiplier, "cost_multiplier", 1, low_open=True)
        self.patience = check_int(patience, "patience", 1)
        self.attack_succ_threshold = check_float(attack_succ_threshold, "attack_succ_threshold", 0, 1,
                                                 low_open=True)
        self.early_stop = check_bool(early_stop, "early_stop")
        self.early_stop_threshold = check_float(early_stop_threshold, "early_stop_threshold", 0, 1, low_open=True)
        self.early_stop_patience = (5 * self.patience if early_stop_patience is None
                                    else check_int(early_stop_patience, "early_stop_patience", 1))
        self.anomaly_threshold = check_float(anomaly_threshold, "anomaly_threshold", 0, low_open=True)
        if classes is not None:
            if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
                raise SibaError(f"classes must be a list of class indices, got {classes!r}")
            classes = sorted({check_int(c, "each of classes", 0) for c in classes})
            if len(classes) < 3:
                raise SibaError("classes must name at least 3 classes (the MAD outlier test needs them)")
        self.classes = classes

    def check_inputs(self, inputs: DefenseInput) -> None:
        super().check_inputs(inputs)
        if self.classes is not None and max(self.classes) >= (inputs.num_classes or 0):
            raise SibaError(f"classes names class {max(self.classes)}, but there are {inputs.num_classes} "
                            f"(0..{(inputs.num_classes or 0) - 1})")

    # ------------------------------------------------------------------ the optimisation
    def reverse(self, model: nn.Module, images: torch.Tensor, target: int, device: torch.device,
                generator: torch.Generator, bar: Any = None) -> dict[str, Any]:
        """Reverse-engineer the trigger of class ``target`` on float ``[0,1]`` ``images`` (CPU)."""
        n, c, h, w = images.shape
        m0 = torch.rand(h, w, generator=generator)
        p0 = torch.rand(c, h, w, generator=generator)
        theta_m = _atanh01(m0).to(device).requires_grad_(True)
        theta_p = _atanh01(p0).to(device).requires_grad_(True)
        opt = torch.optim.Adam([theta_m, theta_p], lr=self.lr, betas=(0.5, 0.9))
        tgt_all = torch.full((n,), target, dtype=torch.long, device=device)
        cost, cost_set, up, down, went_up, went_down = 0.0, 0, 0, 0, False, False
        best_norm, best = math.inf, None
        es_counter, es_best = 0, math.inf
        history: list[dict[str, float]] = []
        epochs_run = 0
        for epoch in range(self.epochs):
            perm = torch.randperm(n, generator=generator)
            tot_ce = tot_reg = tot_acc = 0.0
            for s in range(0, n, self.batch_size):
                idx = perm[s:s + self.batch_size]
                x = images[idx].to(device)
                mask, pattern = _squash(theta_m), _squash(theta_p)
                xp = (1 - mask) * x + mask * pattern
                logits = model(xp)
                ce = F.cross_entropy(logits, tgt_all[:len(idx)])
                reg = mask.abs().sum()
                loss = ce + cost * reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                b = len(idx)
                tot_ce += float(ce.detach()) * b
                tot_reg += float(reg.detach()) * b
                tot_acc += float((logits.argmax(1) == target).sum())
            epochs_run = epoch + 1
            acc, reg_mean = tot_acc / n, tot_reg / n
            history.append({"epoch": epoch + 1, "cost": cost, "ce": tot_ce / n, "l1": reg_mean, "success": acc})
            if bar is not None:
                bar.update(1)
            if acc >= self.attack_succ_threshold and reg_mean < best_norm:
                with torch.no_grad():
                    best = (_squash(theta_m).detach().cpu(), _squash(theta_p).detach().cpu())
                best_norm = reg_mean
            if self.early_stop:
                if best_norm < math.inf:
                    es_counter = es_counter + 1 if best_norm >= self.early_stop_threshold * es_best else 0
                es_best = min(best_norm, es_best)
                if went_up and went_down and es_counter >= self.early_stop_patience:
                    break
            if cost == 0 and acc >= self.attack_succ_threshold:
                cost_set += 1
                if cost_set >= self.patience:
                    cost, up, down, went_up, went_down = self.init_cost, 0, 0, False, False
            else:
                cost_set = 0
            if acc >= self.attack_succ_threshold:
                up, down = up + 1, 0
            else:
                up, down = 0, down + 1
            if up >= self.patience:
                up, went_up = 0, True
                cost *= self.cost_multiplier
            elif down >= self.patience:
                down, went_down = 0, True
                cost /= self.cost_multiplier ** 1.5
        reached = best is not None
        if best is None:
            with torch.no_grad():
                best = (_squash(theta_m).detach().cpu(), _squash(theta_p).detach().cpu())
        mask, pattern = best
        with torch.no_grad():  # the kept trigger's success on the images, measured once more
            succ = 0
            for s in range(0, n, 512):
                x = images[s:s + 512].to(device)
                succ += int((model((1 - mask.to(device)) * x + mask.to(device) * pattern.to(device)).argmax(1)
                             == target).sum())
        return {"mask": mask, "pattern": pattern, "l1": float(mask.sum()), "reached": reached,
                "success": succ / n, "epochs": epochs_run, "final_cost": cost, "history": history}

    # ------------------------------------------------------------------ the defense
    def _run(self, inputs: DefenseInput, model: nn.Module, device: torch.device, out: Path,
             progress: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
        assert inputs.clean_val is not None and inputs.num_classes is not None
        g = torch.Generator().manual_seed(self.seed)
        val = inputs.clean_val
        take = torch.randperm(len(val), generator=g)[:self.max_images].sort().values
        images = val.images[take].float().div_(255)
        classes = self.classes if self.classes is not None else list(range(inputs.num_classes))
        bar = progress_bar(len(classes) * self.epochs, "neural cleanse", progress, "epoch")
        state = frozen(model)
        found: dict[int, dict[str, Any]] = {}
        try:
            for c in classes:
                with torch.enable_grad():
                    found[c] = self.reverse(model, images, c, device, g, bar)
                log(f"class {c}: mask L1 {found[c]['l1']:.1f} (success {found[c]['success']:.3f}, "
                    f"{found[c]['epochs']} epochs)")
        finally:
            unfreeze(model, state)
            if bar is not None:
                bar.close()
        norms = [found[c]["l1"] for c in classes]
        idx, median, mad = mad_anomaly_index(norms)
        flagged = [classes[i] for i in flagged_by_anomaly(norms, self.anomaly_threshold)]
        names = list(inputs.test_set.classes)
        per_class = [{"class": c, "name": names[c] if c < len(names) else str(c), "l1": found[c]["l1"],
                      "anomaly_index": a, "below_median": found[c]["l1"] < median, "reached": found[c]["reached"],
                      "success": found[c]["success"], "epochs": found[c]["epochs"],
                      "final_cost": found[c]["final_cost"]} for c, a in zip(classes, idx)]
        triggers = {}
        for c in classes:
            f = found[c]
            triggers[c] = BlendTrigger(f["pattern"], f["mask"], num_classes=inputs.num_classes, target=c,
                                       meta={"defense": self.name, "reversed_for_class": c, "l1": f["l1"]})
        for c, t in triggers.items():
            t.save(out / "reversed" / f"class-{c}")
        self.artifacts["reversed_triggers"] = triggers
        below = [i for i, c in enumerate(classes) if found[c]["l1"] < median]
        scores = {"l1_norms": norms, "anomaly_indices": idx, "median_l1": median, "mad": mad,
                  "max_anomaly_index_below_median": max((idx[i] for i in below), default=0.0),
                  "classes": classes}
        target = getattr(inputs.trigger, "target", None)
        region = trigger_region(inputs.trigger) if inputs.trigger is not None else None
        if region is not None and isinstance(target, int) and target in found:
            scores["target_mask_on_trigger"], scores["trigger_region_share"] = mask_on_trigger(found[target]["mask"],
                                                                                              region)
        metrics = self.inspection_metrics(scores, flagged, inputs)
        figs = [class_bars(out / "neural-cleanse.png", norms, idx, flagged, classes=[names[c] for c in classes],
                           threshold=self.anomaly_threshold,
                           title="Neural Cleanse: flagged " + (", ".join(names[c] for c in flagged) or "nothing")),
                self._trigger_grid(out / "neural-cleanse-triggers.png", triggers, classes, names, flagged)]
        return {"metrics": metrics, "per_class": per_class, "figures": figs,
                "reversed_triggers": [f"reversed/class-{c}.safetensors" for c in classes],
                "history": {str(c): found[c]["history"] for c in classes}}

    @staticmethod
    def _trigger_grid(path: Path, triggers: dict[int, BlendTrigger], classes: list[int], names: list[str],
                      flagged: list[int]) -> str:
        masks = torch.stack([triggers[c].alpha[:1] for c in classes])
        patterns = torch.stack([triggers[c].pattern for c in classes])
        labels = [f"{'*' if c in flagged else ''}{names[c] if c < len(names) else c}" for c in classes]
        return image_grid(path, [masks, patterns, masks * patterns], row_labels=["mask", "pattern", "mask·pattern"],
                          col_labels=labels, title="reversed triggers (* flagged)")


def mask_on_trigger(mask: torch.Tensor, region: torch.Tensor) -> tuple[float, float]:
    """``(share, region_share)``: the share of a reversed mask's mass (H×W, or C×H×W reduced over channels
    by the maximum) on the trigger's pixels ``region`` (H×W bool) or their horizontal mirror, and that
    region's share of the image."""
    both = region.cpu() | region.cpu().flip(-1)
    m = mask.detach().float().cpu()
    m = m.amax(0) if m.dim() == 3 else m
    total = float(m.sum())
    share = float((m * both.to(m.dtype)).sum()) / total if total > 0 else 0.0
    return share, float(both.float().mean())


def saved_mask_on_trigger(reversed_file: str | Path, trigger_file: str | Path) -> tuple[float, float] | None:
    """:func:`mask_on_trigger` of a saved reversed trigger (``reversed/class-<c>.safetensors``) against a saved
    attack trigger; None when the trigger has no pixels (a warp)."""
    from ..attacks import load_trigger

    region = trigger_region(load_trigger(trigger_file))
    return None if region is None else mask_on_trigger(load_trigger(reversed_file).alpha, region)


def _squash(theta: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(theta) + 1) / 2


def _atanh01(v: torch.Tensor) -> torch.Tensor:
    """The ``θ`` with ``(tanh θ + 1)/2 = v`` (``v`` kept off 0 and 1 by :data:`TANH_EPS`)."""
    return torch.atanh((v * 2 - 1).clamp(-1 + TANH_EPS, 1 - TANH_EPS))
