"""SCALE-UP (Guo et al., ICLR 2023): a triggered input keeps its class when its pixel values are
amplified; a clean one drifts.

Each input ``x`` is amplified by every ``n`` in ``scales`` (default ``3, 5, 7, 9, 11``, the paper's
set), ``clip(n·x, 0, 1)`` in pixel space, and its *scaled prediction consistency* is
``SPC(x) = mean_n [f(clip(n·x)) = f(x)]``. An input with ``SPC ≥ threshold`` is flagged; the
default ``threshold = 0.5`` is the one of the paper's data-free setting (and of the public
implementations: the official code, BackdoorBox, Backdoor Toolbox). The detection score is the
SPC itself. It needs no clean data (black-box, data-free); the data-limited variant, which
standardises the SPC by its mean and deviation on clean images, is not implemented.

SPC takes only ``len(scales) + 1`` values, so many scores tie: the AUROC counts a tie between a
clean and a triggered input as one half, and the TPR at a fixed FPR is that of the best threshold
whose FPR does not exceed it (see :mod:`siba.defenses.metrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import DetectionDefense, check_float, check_int_list, float_batch, progress_bar, register_defense
from .figures import histograms


@register_defense
class ScaleUp(DetectionDefense):
    """SCALE-UP: amplify pixel values; a consistent prediction flags a triggered input."""

    name = "scale-up"
    description = "amplify pixels by 3..11; scaled prediction consistency >= 0.5 flags an input (Guo et al. 2023)"
    score_name = "SPC"

    def __init__(self, *, scales: list[int] | tuple[int, ...] = (3, 5, 7, 9, 11), threshold: float = 0.5,
                 batch_size: int = 256, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        self.scales = tuple(check_int_list(scales, "scales", 2))
        self.threshold_value = check_float(threshold, "threshold (the SPC that flags an input)", 0, 1)

    def params(self) -> dict[str, Any]:
        out = super().params()
        out["threshold"] = self.threshold_value
        return out

    @torch.no_grad()
    def scores(self, model, images, device, *, progress, desc, generator, context):
        n_img = len(images)
        per = max(1, self.batch_size // (len(self.scales) + 1))
        out = torch.empty(n_img, dtype=torch.float64)
        bar = progress_bar(n_img, desc, progress, "img")
        k = len(self.scales)
        scale = torch.tensor([1.0, *map(float, self.scales)], device=device).view(-1, 1, 1, 1, 1)
        for s in range(0, n_img, per):
            x = float_batch(images, s, min(s + per, n_img), device)
            b = x.shape[0]
            xs = (x.unsqueeze(0) * scale).clamp_(0, 1).flatten(0, 1)  # (k+1)·b images, the original first
            pred = model(xs).argmax(1).view(k + 1, b)
            out[s:s + b] = (pred[1:] == pred[:1]).double().mean(0).cpu()
            if bar is not None:
                bar.update(b)
        if bar is not None:
            bar.close()
        return out

    def threshold(self, model, inputs, device, progress, generator, context):
        return self.threshold_value

    def figures(self, out: Path, clean: torch.Tensor, poison: torch.Tensor, threshold: float,
                context: dict[str, Any]) -> list[str]:
        return [histograms(out / "scale-up-spc.png", {"clean": clean, "poisoned": poison},
                           xlabel="scaled prediction consistency", bins=len(self.scales) + 1,
                           title=f"SCALE-UP (scales {', '.join(map(str, self.scales))})", threshold=threshold,
                           threshold_label=f"threshold {threshold:g}")]

    def detail(self, clean, poison, threshold, context):
        return {"flag_rule": "SPC ≥ threshold", "amplification": "clip(n·x, 0, 1) for n in scales",
                "mean_spc": {"clean": float(clean.mean()), "poisoned": float(poison.mean())}}
