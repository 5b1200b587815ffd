"""STRIP (Gao et al., ACSAC 2019): a triggered input stays confidently classified when other images
are superimposed on it; a clean one does not.

Each input ``x`` is superimposed with ``n`` clean images drawn at random (seeded, distinct per
input) from the clean validation subset (the training set's, never the test set), and its score
is the **mean of the softmax entropies** of the ``n`` superimposed images (Gao et al.'s
``H_sum / N``, in bits), not the entropy of the mean prediction. Low entropy is suspicious; the
detection score is ``−entropy`` so that, as for every detector here, higher is more suspicious.

The threshold comes from clean data the defender holds: the entropies of the clean validation
images (each superimposed with ``n`` *other* validation images) fix the entropy below which at most
``fpr`` of them fall (the false rejection rate, 1% by default as in the paper). The test set is
only scored.

Where the anchors differ, and what siba does:

- *Superposition.* STRIP's released code adds the two images with saturation (``cv2.addWeighted``
  with weights 1 and 1: ``clip(x + x_clean, 0, 1)``); TrojanZoo and BackdoorBox blend them
  (``0.5·x + 0.5·x_clean``). ``blend: add`` (default) follows the paper's code; ``blend:
  average`` the blend. The result JSON records which (``settings.blend``).
- *N.* The paper uses ``N = 100``; the cost is ``N`` forward passes per input, so a 1,000-image
  test set costs 100,000 forward passes. The default ``n = 20``: the score is a mean over ``N``
  draws, its spread shrinks as ``1/√N``, and on the tests' planted backdoor the AUROC with 20
  draws is within 0.01 of that with 100 (measured when the defaults were chosen); raise ``n``
  for a final number.
- *Entropy.* In bits (base 2), as the paper's code; the mean over the draws, as the paper.
- *Threshold.* The empirical ``1 − fpr`` quantile of the clean validation entropies (the paper
  fits a normal distribution to them and takes its percentile); TPR and FPR at it are reported
  with the AUROC and the oracle TPR at 1% and 5% FPR of the test ROC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import DefenseInput, DetectionDefense, check_choice, check_float, check_int, float_batch, progress_bar
from .base import register_defense
from .figures import histograms
from .metrics import threshold_at_fpr

BLENDS = ("add", "average")


@register_defense
class STRIP(DetectionDefense):
    """STRIP: superimpose clean images; a low mean prediction entropy flags a triggered input."""

    name = "strip"
    description = "superimpose n clean images; low mean softmax entropy flags triggered inputs (Gao et al. 2019)"
    score_name = "-entropy (bits)"

    def __init__(self, *, n: int = 20, blend: str = "add", fpr: float = 0.01, batch_size: int = 256,
                 seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        self.n = check_int(n, "n (the number of superimposed images)", 1)
        self.blend = check_choice(blend, "blend", BLENDS)
        self.fpr = check_float(fpr, "fpr (the false rejection rate on clean inputs)", 0, 1, low_open=True,
                               high_open=True)

    def min_val_images(self) -> int:
        return self.n + 1  # every validation image is superimposed with n others

    def superimpose(self, x: torch.Tensor, overlay: torch.Tensor) -> torch.Tensor:
        """``x`` (``B×C×H×W``) with ``overlay`` (``B×C×H×W``) laid over it by the ``blend`` rule."""
        if self.blend == "add":
            return (x + overlay).clamp_(0, 1)
        return x.mul(0.5).add_(overlay, alpha=0.5)

    def prepare(self, model: nn.Module, inputs: DefenseInput, device: torch.device,
                generator: torch.Generator) -> dict[str, Any]:
        assert inputs.clean_val is not None
        return {"pool": inputs.clean_val.images}

    @torch.no_grad()
    def entropies(self, model: nn.Module, images: Any, pool: torch.Tensor, device: torch.device, *,
                  progress: bool | None, desc: str, generator: torch.Generator,
                  exclude_self: bool = False) -> torch.Tensor:
        """The mean entropy (bits) of each image's ``n`` superpositions; ``exclude_self``: image ``i``
        is ``pool[i]``, which is not drawn for it."""
        n_img, n_pool = len(images), pool.shape[0]
        per = max(1, self.batch_size // self.n)  # inputs per batch of superpositions
        out = torch.empty(n_img, dtype=torch.float64)
        bar = progress_bar(n_img, desc, progress, "img")
        for s in range(0, n_img, per):
            x = float_batch(images, s, min(s + per, n_img), device)
            b = x.shape[0]
            if exclude_self:  # n distinct draws among the pool without the image itself
                draws = torch.rand(b, n_pool - 1, generator=generator).argsort(1)[:, :self.n]
                own = torch.arange(s, s + b).unsqueeze(1)
                draws = draws + (draws >= own).long()
            else:
                draws = torch.rand(b, n_pool, generator=generator).argsort(1)[:, :self.n]
            over = pool[draws.flatten()].to(device).float().div_(255)
            mixed = self.superimpose(x.repeat_interleave(self.n, 0), over)
            p = torch.softmax(model(mixed).float(), 1)
            h = -(p * torch.log2(p.clamp_min(1e-30))).sum(1)
            out[s:s + b] = h.view(b, self.n).mean(1).double().cpu()
            if bar is not None:
                bar.update(b)
        if bar is not None:
            bar.close()
        return out

    def scores(self, model, images, device, *, progress, desc, generator, context):
        return -self.entropies(model, images, context["pool"], device, progress=progress, desc=desc,
                               generator=generator)

    def threshold(self, model, inputs, device, progress, generator, context):
        assert inputs.clean_val is not None
        h = self.entropies(model, inputs.clean_val.images, context["pool"], device, progress=progress,
                           desc="strip: calibration", generator=generator, exclude_self=True)
        context["val_entropy"] = h
        return threshold_at_fpr(-h, self.fpr)

    def figures(self, out: Path, clean: torch.Tensor, poison: torch.Tensor, threshold: float,
                context: dict[str, Any]) -> list[str]:
        return [histograms(out / "strip-entropy.png", {"clean": -clean, "poisoned": -poison},
                           xlabel="mean entropy of the superimposed inputs (bits)",
                           title=f"STRIP (n={self.n}, blend={self.blend})", threshold=-threshold,
                           threshold_label=f"threshold (clean-val FPR {self.fpr:g})")]

    def detail(self, clean, poison, threshold, context):
        val = context.get("val_entropy")
        return {"entropy_threshold": -threshold, "flag_rule": "mean entropy ≤ entropy_threshold",
                "superposition": "clip(x + x_clean, 0, 1)" if self.blend == "add" else "0.5·x + 0.5·x_clean",
                "entropy": "mean over the n superpositions of the softmax entropy, in bits",
                "mean_entropy": {"clean": float(-clean.mean()), "poisoned": float(-poison.mean()),
                                 "clean_val": float(val.mean()) if val is not None else None}}
