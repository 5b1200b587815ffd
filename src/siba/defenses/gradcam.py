"""Grad-CAM saliency (Selvaraju et al. 2017), as SentiNet (Chou et al. 2020) looks at a triggered
input: does the model's decision rest on the trigger's pixels?

The maps come from the model's **last convolutional layer** (the last ``nn.Conv2d`` it registers:
FastNet ``block3.conv2``, ResNet ``layer4.<last>.conv2``, VGG the last ``features`` convolution),
read with plain torch forward hooks: with ``A`` that layer's output and ``y`` the logit of the
predicted class, the weights are ``w_k = mean_{ij} ∂y/∂A_k,ij`` and the map is
``ReLU(Σ_k w_k·A_k)``, upsampled bilinearly to the image size. (Grad-CAM is usually read after the
block's activation; the convolution's own output is what the brief of this module asks for, and
the two differ by the batch norm and activation that follow.)

The measurement: for each triggered test image the trigger attacks, the *share of saliency mass*
inside the trigger's pixels (an additive trigger's ``mask``; a patch or blend trigger's
``alpha > 0``), ``Σ_region map / Σ map``, averaged over the images; and the same share for the
*clean* versions of the same images at the same pixels — the baseline a trigger-free image gets
for that region (about the region's share of the image when saliency is spread evenly). A ratio
well above 1 means the model looks at the trigger. A trigger covering the whole image (Blended's
constant ``alpha``) gives a share of 1 for both; a trigger without a region (a warp) gives no
share, only the maps. Images whose map is all zero (no positive evidence) are left out of the
means and counted (``zero_maps``).

This is an inspection *view*: it flags no class (``metrics.flagged`` is None); ``metrics.scores``
holds the shares. Figure: ``gradcam.png``, clean and triggered images with their maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import (DefenseInput, InspectionDefense, check_int, frozen, last_conv_and_norm, poisoned_inputs,
                   progress_bar, register_defense, trigger_region, unfreeze)
from .figures import heat_overlay, image_grid


def gradcam_maps(model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps (``N×H×W``, upsampled to the input) of ``layer`` for ``classes`` (default: the
    predicted ones), and the classes used."""
    store: dict[str, torch.Tensor] = {}

    def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        store["a"] = out

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)  # a leaf that needs a gradient, so the graph reaches the layer
            logits = model(xg)
            cls = logits.argmax(1) if classes is None else classes.to(logits.device)
            y = logits.gather(1, cls.view(-1, 1)).sum()
            acts = store["a"]
            grads = torch.autograd.grad(y, acts)[0]
    finally:
        handle.remove()
    weights = grads.mean((2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1).clamp_min(0)
    return cam, cls.detach()


def mass_share(maps: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(share, valid)``: each map's mass inside ``region`` (H×W bool) over its total; ``valid``
    is false for an all-zero map (its share is set to NaN)."""
    total = maps.flatten(1).sum(1)
    inside = (maps * region.to(maps.device, maps.dtype)).flatten(1).sum(1)
    valid = total > 0
    share = torch.where(valid, inside / total.clamp_min(1e-30), torch.full_like(total, float("nan")))
    return share, valid


@register_defense
class GradCAM(InspectionDefense):
    """Grad-CAM at the last conv layer: how much saliency falls on the trigger, against clean images."""

    name = "grad-cam"
    description = "Grad-CAM saliency at the last conv layer: share of saliency on the trigger vs clean images"
    needs_trigger = True

    def __init__(self, *, max_images: int = 500, examples: int = 8, batch_size: int = 128, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.max_images = check_int(max_images, "max_images", 1)
        self.examples = check_int(examples, "examples (images in the figure)", 0, 64)
        self.batch_size = check_int(batch_size, "batch_size", 1)

    def _run(self, inputs: DefenseInput, model: nn.Module, device: torch.device, out: Path,
             progress: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
        mark = inputs.trigger.to(device)
        test = inputs.test_set
        idx, _ = poisoned_inputs(test, mark)
        g = torch.Generator().manual_seed(self.seed)
        idx = idx[torch.randperm(len(idx), generator=g)[:self.max_images]].sort().values
        layer_name, layer, _, _ = last_conv_and_norm(model)
        region = trigger_region(mark)
        state = frozen(model)
        shares: dict[str, list[torch.Tensor]] = {"poisoned": [], "clean": []}
        valid: dict[str, list[torch.Tensor]] = {"poisoned": [], "clean": []}
        shown: dict[str, torch.Tensor] = {}
        bar = progress_bar(len(idx), "grad-cam", progress, "img")
        try:
            for s in range(0, len(idx), self.batch_size):
                x = test.images[idx[s:s + self.batch_size]].to(device).float().div_(255)
                xp = mark.apply(x)
                for name, batch in (("clean", x), ("poisoned", xp)):
                    maps, _ = gradcam_maps(model, layer, batch)
                    if region is not None:
                        sh, ok = mass_share(maps, region)
                        shares[name].append(sh.cpu())
                        valid[name].append(ok.cpu())
                    if s == 0 and self.examples:
                        shown[name] = batch[:self.examples].cpu()
                        shown[name + "-map"] = maps[:self.examples].cpu()
                if bar is not None:
                    bar.update(x.shape[0])
        finally:
            unfreeze(model, state)
            if bar is not None:
                bar.close()
        scores: dict[str, Any] = {"layer": layer_name, "n_images": int(len(idx)),
                                  "region_pixels": int(region.sum()) if region is not None else None,
                                  "region_share_of_image": float(region.float().mean()) if region is not None else None}
        if region is not None:
            for name in ("poisoned", "clean"):
                sh, ok = torch.cat(shares[name]), torch.cat(valid[name])
                scores[f"mass_share_{name}"] = float(sh[ok].mean()) if ok.any() else None
                scores[f"zero_maps_{name}"] = int((~ok).sum())
            p, c = scores["mass_share_poisoned"], scores["mass_share_clean"]
            scores["share_ratio"] = p / c if p is not None and c else None
        else:
            scores["note"] = "the trigger has no pixel region (mask or alpha): maps only"
        figures = []
        if shown:
            rows = [shown["clean"], heat_overlay(shown["clean"], shown["clean-map"]),
                    shown["poisoned"], heat_overlay(shown["poisoned"], shown["poisoned-map"])]
            figures.append(image_grid(out / "gradcam.png", rows,
                                      row_labels=["clean", "Grad-CAM", "triggered", "Grad-CAM"],
                                      title=f"Grad-CAM at {layer_name} (predicted class)"))
        metrics = self.inspection_metrics(scores, None, inputs)
        return {"metrics": metrics, "figures": figures,
                "cam": "ReLU(Σ_k mean(∂y_pred/∂A_k)·A_k) at the last conv layer's output, bilinear upsampling"}
