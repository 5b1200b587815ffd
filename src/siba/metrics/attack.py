"""Benign accuracy, attack success rate and stealth of one trigger on one model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attacks.trigger import Mark
from ..data.dataset import ImageSet
from ..runtime import autocast, pick_device, resolve_precision
from .stealth import stealth_metrics


@torch.no_grad()
def evaluate_attack(model: nn.Module | None, test_set: ImageSet, mark: Mark | None, *,
                    device: torch.device | str | None = None, batch_size: int = 1000,
                    precision: str = "auto", full: bool = True) -> dict[str, Any]:
    """One pass over the test set; returns fractions in [0, 1] and stealth averages.

    - ``ba``: accuracy on the clean test images;
    - ``asr``: share of attacked test images (all-to-one: those not of the target class)
      classified as their target with the float trigger; ``asr_quantized``: the same with
      the trigger as an 8-bit poisoned image carries it; ``asr_by_class``: the ASR of the
      attacked images of each true class (``None`` for a class with none attacked, such as the
      all-to-one target), to see which source classes resist;
    - ``l0`` (mean changed pixels, ``l0_max`` the largest), ``linf`` (largest change),
      ``ssim`` and ``psnr`` (means) between clean and poisoned test images, and ``l0_quantized``,
      ``linf_quantized`` for the 8-bit poisoned images.

    With ``model=None`` only the stealth metrics are computed; with ``full=False`` only
    ``ba`` and ``asr`` (a quick check during training).
    """
    if device is None:
        device = next(model.parameters()).device if model is not None else torch.device("cpu")
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    if model is not None:
        model.eval().to(dev)
    if mark is not None:
        mark.check_fits(test_set.image_shape, test_set.num_classes)
        mark = mark.to(dev)

    def classify(x: torch.Tensor) -> torch.Tensor:
        assert model is not None
        with autocast(dev, prec):
            return model(x.contiguous(memory_format=torch.channels_last)).argmax(1)

    sums: dict[str, float] = {}
    l0_max = linf_max = l0q_max = linfq_max = 0.0
    correct = attacked = hit = hit_q = 0
    attacked_by_class = torch.zeros(test_set.num_classes, dtype=torch.long, device=dev)
    hit_by_class = torch.zeros_like(attacked_by_class)
    for i in range(0, len(test_set), batch_size):
        xu = test_set.images[i:i + batch_size].to(dev)
        y = test_set.labels[i:i + batch_size].to(dev)
        x = xu.float() / 255
        if model is not None:
            correct += int((classify(x) == y).sum())
        if mark is None:
            continue
        xp = mark.apply(x)
        if not full and model is not None:
            sel = mark.attack_mask(y)
            attacked += int(sel.sum())
            hit += int((classify(xp[sel]) == mark.targets(y[sel])).sum())
            continue
        xq = mark.apply_uint8(xu).float() / 255
        st = stealth_metrics(x, xp)
        stq = stealth_metrics(x, xq)
        for key in ("l0", "ssim", "psnr"):
            sums[key] = sums.get(key, 0.0) + float(st[key].sum())
        l0_max = max(l0_max, float(st["l0"].max()))
        linf_max = max(linf_max, float(st["linf"].max()))
        l0q_max = max(l0q_max, float(stq["l0"].max()))
        linfq_max = max(linfq_max, float(stq["linf"].max()))
        if model is not None:
            sel = mark.attack_mask(y)
            if sel.any():
                t = mark.targets(y[sel])
                attacked += int(sel.sum())
                won = classify(xp[sel]) == t
                hit += int(won.sum())
                hit_q += int((classify(xq[sel]) == t).sum())
                attacked_by_class += torch.bincount(y[sel], minlength=test_set.num_classes)
                hit_by_class += torch.bincount(y[sel][won], minlength=test_set.num_classes)
    n = len(test_set)
    out: dict[str, Any] = {"n_test": n}
    if model is not None:
        out["ba"] = correct / max(n, 1)
    if mark is not None and not full and model is not None:
        out.update({"asr": hit / max(attacked, 1), "n_attacked": attacked})
    elif mark is not None:
        if model is not None:
            out.update({"asr": hit / max(attacked, 1), "asr_quantized": hit_q / max(attacked, 1),
                        "n_attacked": attacked,
                        "asr_by_class": [h / c if c else None
                                         for h, c in zip(hit_by_class.tolist(), attacked_by_class.tolist())]})
        out.update({"l0": sums["l0"] / n, "l0_max": l0_max, "linf": linf_max, "ssim": sums["ssim"] / n,
                    "psnr": sums["psnr"] / n, "l0_quantized": l0q_max, "linf_quantized": linfq_max})
    return out
