"""Pictures of triggers: the trigger magnified, and clean / poisoned / difference panels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..runtime import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from ..attacks.trigger import Mark


def _to_pil(chw: torch.Tensor, scale: int):
    from PIL import Image

    arr = (chw.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    im = Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0])
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale != 1 else im


def trigger_visual(mark: "Mark") -> torch.Tensor:
    """The trigger as a C×H×W image: 0.5 + δ/(2·max|δ|) for additive triggers (grey = no
    change), the pattern over a grey background for patches and blends."""
    from ..attacks.trigger import Trigger

    if isinstance(mark, Trigger):
        pert = mark.perturbation.cpu()
        peak = float(pert.abs().max()) or 1.0
        return 0.5 + pert / (2 * peak)
    grey = torch.full(mark.shape, 0.5)
    return mark.apply(grey.unsqueeze(0))[0].cpu()


def render_trigger(mark: "Mark", path: str | os.PathLike, samples: torch.Tensor | None = None,
                   scale: int = 4, max_samples: int = 4) -> Path:
    """Write a PNG: a row with the magnified trigger, then for each sample (uint8 C×H×W)
    a row of clean, poisoned (8-bit) and amplified difference images."""
    from PIL import Image, ImageDraw

    tiles = [[("trigger", trigger_visual(mark))]]
    if samples is not None and len(samples):
        xs = samples[:max_samples]
        poisoned = mark.apply_uint8(xs.to(torch.uint8)).float() / 255
        clean = xs.float() / 255
        for c, p in zip(clean, poisoned):
            diff = p - c
            peak = float(diff.abs().max()) or 1.0
            tiles.append([("clean", c), ("poisoned", p), ("difference", 0.5 + diff / (2 * peak))])
    h, w = mark.shape[1] * scale, mark.shape[2] * scale
    label_h, pad = 14, 6
    cols = max(len(r) for r in tiles)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, len(tiles) * (h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(tiles):
        for c, (label, img) in enumerate(row):
            x0, y0 = pad + c * (w + pad), pad + r * (h + label_h + pad)
            draw.text((x0, y0), label, fill="black")
            canvas.paste(_to_pil(img, scale), (x0, y0 + label_h))
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
