"""A small line-chart renderer on Pillow (no matplotlib needed) for report figures."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from ..runtime import atomic_path

PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


# Pillow's built-in font has no Greek letters or math signs: spell them out.
_PLAIN = str.maketrans({"α": "alpha", "ε": "eps", "δ": "delta", "ρ": "rho", "·": "*", "×": "x", "≤": "<=",
                        "≥": ">=", "—": "-", "–": "-", "∞": "inf"})


REFERENCE_COLOUR = "#888888"


def _plain(text: str) -> str:
    return str(text).translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def line_chart(path: str | os.PathLike, series: dict[str, Sequence[tuple[float, float]]], *, title: str = "",
               xlabel: str = "", ylabel: str = "", ylim: tuple[float, float] | None = None,
               log_x: bool = False, size: tuple[int, int] = (640, 400),
               reference: tuple[float, str] | None = None) -> Path:
    """Write a PNG line chart of ``{label: [(x, y), ...]}``.

    ``reference=(y, label)`` draws a dashed horizontal line at ``y`` (a goal such as 90% ASR),
    labelled at its left end.
    """
    from PIL import Image, ImageDraw

    W, H = size
    left, right, top, bottom = 64, 150, 36, 48
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [p for s in series.values() for p in s if p[1] is not None and not math.isnan(p[1])]
    xs = [math.log10(p[0]) if log_x else p[0] for p in pts] or [0, 1]
    ys = [p[1] for p in pts] or [0, 1]
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = ylim if ylim else (min(ys), max(ys))
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    pw, ph = W - left - right, H - top - bottom

    def px(x: float) -> float:
        x = math.log10(x) if log_x else x
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    d.rectangle([left, top, left + pw, top + ph], outline="black")
    for t in _ticks(y0, y1):
        d.line([left - 4, py(t), left + pw, py(t)], fill="#dddddd")
        d.text((left - 8, py(t)), f"{t:g}", fill="black", anchor="rm")
    xt = sorted({p[0] for p in pts}) if len({p[0] for p in pts}) <= 10 else _ticks(x0, x1)
    for t in xt:
        d.line([px(t), top + ph, px(t), top + ph + 4], fill="black")
        d.text((px(t), top + ph + 6), f"{t:g}", fill="black", anchor="ma")
    d.text((left + pw / 2, H - 16), _plain(xlabel), fill="black", anchor="ma")
    d.text((8, top - 20), _plain(ylabel), fill="black")
    d.text((left + pw / 2, 8), _plain(title), fill="black", anchor="ma")
    if reference is not None and y0 <= reference[0] <= y1:
        ry = py(reference[0])
        for sx in range(left, left + pw, 12):
            d.line([sx, ry, min(sx + 6, left + pw), ry], fill=REFERENCE_COLOUR, width=1)
        d.text((left + 4, ry - 2), _plain(reference[1]), fill=REFERENCE_COLOUR, anchor="lb")
    for i, (label, s) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        good = [(px(x), py(y)) for x, y in sorted(s) if y is not None and not math.isnan(y)]
        if len(good) > 1:
            d.line(good, fill=colour, width=2)
        for cx, cy in good:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        ly = top + 10 + 18 * i
        d.line([left + pw + 12, ly, left + pw + 32, ly], fill=colour, width=3)
        d.text((left + pw + 38, ly), _plain(label), fill="black", anchor="lm")
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
