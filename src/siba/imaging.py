"""Pictures from tensors: a grid of labelled, magnified image tiles written as a PNG (Pillow).

The lowest layer of siba's images: it knows tensors, not triggers or runs, so that triggers
(``Trigger.render``) and the report can both use it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from .runtime import atomic_path


def to_pil(chw: torch.Tensor, scale: int = 1):
    """A float ``C×H×W`` image in ``[0, 1]`` (1 or 3 channels) as a PIL image, magnified ``scale`` times."""
    from PIL import Image

    arr = (chw.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    im = Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0])
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale != 1 else im


def tile_grid(rows: Sequence[Sequence[tuple[str, torch.Tensor]]], path: str | os.PathLike, scale: int = 4) -> Path:
    """Write a PNG of ``rows`` of ``(label, C×H×W image)`` tiles, each magnified ``scale`` times."""
    from PIL import Image, ImageDraw

    first = rows[0][0][1]
    h, w = first.shape[1] * scale, first.shape[2] * scale
    label_h, pad = 14, 6
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, len(rows) * (h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (label, img) in enumerate(row):
            x0, y0 = pad + c * (w + pad), pad + r * (h + label_h + pad)
            draw.text((x0, y0), label, fill="black")
            canvas.paste(to_pil(img, scale), (x0, y0 + label_h))
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def difference_image(clean: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """``changed − clean`` amplified to the full range around grey (0.5: no change)."""
    diff = changed - clean
    peak = float(diff.abs().max()) or 1.0
    return 0.5 + diff / (2 * peak)
