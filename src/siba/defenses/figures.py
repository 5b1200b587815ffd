"""The defenses' figures, drawn with matplotlib's Agg renderer (no display, no pyplot state).

Each function writes one PNG atomically and returns its file name. Figures are made and saved
with :mod:`siba.figures` (:func:`~siba.figures.new_figure`, :func:`~siba.figures.save_figure`),
as every other chart of siba is, so nothing touches pyplot's global state, the backend a user has
configured does not matter, and the same figure gives the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from .. import figures

COLOURS = {"clean": "#1f77b4", "poisoned": "#d62728", "ba": "#1f77b4", "asr": "#d62728", "flag": "#d62728",
           "other": "#7f7f7f", "val": "#2ca02c"}


def _figure(width: float, height: float):
    return figures.new_figure(width, height)


def save_figure(fig, path: str | Path) -> str:
    """Write ``fig`` as a PNG at ``path`` (atomically, deterministically); returns the file's name."""
    return figures.save_figure(fig, path).name


def histograms(path: str | Path, groups: dict[str, Sequence[float] | torch.Tensor], *, xlabel: str, title: str,
               threshold: float | None = None, threshold_label: str = "threshold", bins: int = 40) -> str:
    """Overlaid histograms of the groups' values (density), with a dashed threshold line."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    values = {k: torch.as_tensor(v, dtype=torch.float64).flatten() for k, v in groups.items()}
    finite = torch.cat([v[torch.isfinite(v)] for v in values.values()]) if values else torch.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, bins + 1).tolist()
    for name, v in values.items():
        v = v[torch.isfinite(v)]
        if v.numel():
            ax.hist(v.numpy(), bins=edges, alpha=0.55, density=True, label=f"{name} (n={v.numel()})",
                    color=COLOURS.get(name, None))
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=threshold_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


def class_bars(path: str | Path, norms: Sequence[float], indices: Sequence[float], flagged: Sequence[int], *,
               classes: Sequence[str], threshold: float, title: str) -> str:
    """Neural Cleanse: each class's reversed-mask L1 norm and anomaly index (flagged classes in red)."""
    fig = _figure(8.0, 3.6)
    k = len(norms)
    colours = [COLOURS["flag"] if c in set(flagged) else COLOURS["other"] for c in range(k)]
    names = [str(c) for c in classes] if len(classes) == k else [str(c) for c in range(k)]
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.bar(range(k), list(norms), color=colours)
    ax1.set_ylabel("mask L1 norm (pixels)")
    ax1.set_title("reversed trigger size")
    shown = [min(float(a), 1e3) if a is not None else 0.0 for a in indices]
    ax2.bar(range(k), shown, color=colours)
    ax2.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"index {threshold:g}")
    ax2.set_ylabel("anomaly index (MAD)")
    ax2.set_title("anomaly index")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.set_xticks(range(k))
        ax.set_xticklabels(names, rotation=60 if max(len(n) for n in names) > 2 else 0, fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def image_grid(path: str | Path, rows: Sequence[torch.Tensor], *, row_labels: Sequence[str],
               col_labels: Sequence[str] | None = None, title: str = "", cell: float = 1.1) -> str:
    """A grid of images: each row a float ``[0,1]`` ``N×C×H×W`` (C = 1 or 3) batch, one per cell."""
    n_rows = len(rows)
    n_cols = max((int(r.shape[0]) for r in rows), default=1)
    fig = _figure(max(2.0, cell * n_cols + 1.2), max(1.5, cell * n_rows + (0.4 if title else 0.1)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, batch in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < batch.shape[0]:
                img = batch[j].detach().cpu().float().clamp(0, 1)
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(row_labels[i] if i < len(row_labels) else "", fontsize=8)
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def heat_overlay(images: torch.Tensor, maps: torch.Tensor, strength: float = 0.5) -> torch.Tensor:
    """Images (``N×C×H×W``) with saliency maps (``N×H×W``, each scaled to its maximum) laid over them
    in the 'jet' colours: ``(1 − s·m)·x + s·m·jet(m)``."""
    from matplotlib import colormaps

    x = images.detach().cpu().float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    m = maps.detach().cpu().float()
    peak = m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    m = (m / peak).clamp(0, 1)
    jet = torch.from_numpy(colormaps["jet"](m.numpy())[..., :3]).float().permute(0, 3, 1, 2)
    w = strength * m.unsqueeze(1)
    return (1 - w) * x + w * jet


def curves(path: str | Path, x: Sequence[float], series: dict[str, Sequence[float | None]], *, xlabel: str,
           ylabel: str, title: str, marks: dict[str, tuple[float, float]] | None = None,
           vline: tuple[float, str] | None = None) -> str:
    """Lines ``{label: ys}`` over ``x``; ``marks`` adds single labelled points, ``vline`` a dashed line."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for name, ys in series.items():
        pts = [(a, b) for a, b in zip(x, ys) if b is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=name,
                    color=COLOURS.get(name.split()[0].lower(), None))
    for name, (a, b) in (marks or {}).items():
        if b is not None:
            ax.plot([a], [b], marker="*", markersize=12, linestyle="none", label=name,
                    color=COLOURS.get(name.split()[0].lower(), None))
    if vline is not None:
        ax.axvline(vline[0], color="black", linestyle="--", linewidth=1, label=vline[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
