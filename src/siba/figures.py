"""Figures in the paper's form, drawn with matplotlib's object API (no pyplot, no display).

Every chart siba writes — the run report's, the defenses', the scripts' and the benchmarks' —
is made here or with :func:`new_figure` and :func:`save_figure`:

- :func:`new_figure` makes a :class:`matplotlib.figure.Figure` on an Agg canvas; nothing touches
  pyplot's global state, so the backend a user has configured does not matter;
- :func:`save_figure` writes it as a PNG atomically and deterministically (no software version
  or time stamp in the file: the same figure gives the same bytes);
- :func:`line_chart` (and :func:`line_figure`, :func:`plot_lines` beneath it) draws lines of
  ``(x, y)`` points: a log-scaled x axis for poisoning rates (as the paper's Figure 4), a dashed
  goal line (the 90% ASR), error bars (mean ± standard deviation over seeds, see :func:`mean_std`)
  and reference series (the paper's numbers beside ours) drawn dashed with hollow markers.

Bad input (no points, an ``(x, y)`` pair that is not a pair, ``x`` and ``y`` of different lengths,
a non-positive value on a log axis) is a one-line :class:`~siba.errors.SibaError`.

This module imports only :mod:`siba.runtime`, :mod:`siba.errors`, numpy and matplotlib, so that
every part of siba can use it.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import SibaError
from .runtime import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Our lines, in order (SIBA's red first); a reference series takes the colour of our series of the
# same name, or REFERENCE_COLOUR, which is also the goal line's.
PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
REFERENCE_COLOUR = "#888888"
SIZE = (6.4, 4.0)  # inches; at DPI, 640×400 pixels
DPI = 100
# The PNG's text chunks: matplotlib writes its version as "Software" unless told not to.
PNG_METADATA: dict[str, Any] = {"Software": None}

Point = Sequence[Any]  # (x, y); y may be None or NaN (not measured: left out)
Series = Mapping[str, Sequence[Point]]


def new_figure(width: float = SIZE[0], height: float = SIZE[1], *, dpi: int = DPI) -> "Figure":
    """A figure of ``width × height`` inches (constrained layout) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: "Figure", path: str | os.PathLike, *, dpi: float | None = None) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically, without a version or time stamp); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi if dpi is not None else "figure", metadata=PNG_METADATA)
    return path


def mean_std(points: Iterable[Point], name: str = "points") -> tuple[list[tuple[float, float]], list[float | None]]:
    """Points with repeated ``x`` (one per seed) as ``([(x, mean y), ...], [std, ...])`` sorted by ``x``.

    The spread is the sample standard deviation (``ddof=1``); ``None`` where ``x`` has one point.
    ``None`` or NaN values of ``y`` are left out.
    """
    groups: dict[float, list[float]] = defaultdict(list)
    for i, p in enumerate(points):
        x, y = _pair(name, i, p)
        if y is not None:
            groups[x].append(y)
    xs = sorted(groups)
    means = [(x, float(np.mean(groups[x]))) for x in xs]
    stds = [float(np.std(groups[x], ddof=1)) if len(groups[x]) > 1 else None for x in xs]
    return means, stds


def _number(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise SibaError(f"{v!r} is not a number") from None
    return None if math.isnan(f) else f


def _pair(name: str, i: int, p: Any) -> tuple[float, float | None]:
    if isinstance(p, (str, bytes)) or not hasattr(p, "__len__") or len(p) != 2:
        raise SibaError(f"series {name!r}: point {i} is {p!r}, not an (x, y) pair")
    x, y = _number(p[0]), _number(p[1])
    if x is None or not math.isfinite(x):
        raise SibaError(f"series {name!r}: point {i} has no finite x ({p[0]!r})")
    return x, y


def _points(name: str, values: Sequence[Any], x: Sequence[float] | None) -> list[tuple[float, float | None]]:
    """``values`` as ``(x, y)`` pairs: they are pairs, or ``y`` values matched with the shared ``x``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise SibaError(f"series {name!r} is {type(values).__name__}, not a list of points")
    if x is None:
        return [_pair(name, i, p) for i, p in enumerate(values)]
    if len(values) != len(x):
        raise SibaError(f"series {name!r} has {len(values)} y values for {len(x)} x values")
    return [_pair(name, i, (a, b)) for i, (a, b) in enumerate(zip(x, values))]


def _label(v: float, percent: bool) -> str:
    return f"{100 * v:g}%" if percent else f"{v:g}"


def _check_log(axis: str, name: str, values: Iterable[float | None]) -> None:
    bad = next((v for v in values if v is not None and v <= 0), None)
    if bad is not None:
        raise SibaError(f"a log {axis} axis needs positive values; series {name!r} has {bad:g}")


def plot_lines(ax: "Axes", series: Series, *, x: Sequence[float] | None = None,
               errors: Mapping[str, Sequence[float | None]] | None = None, reference: Series | None = None,
               reference_label: str = "paper", title: str = "", xlabel: str = "", ylabel: str = "",
               xlog: bool = False, ylog: bool = False, ylim: tuple[float, float] | None = None,
               hline: float | tuple[float, str] | None = None, percent_x: bool = False, percent_y: bool = False,
               legend: bool = True) -> None:
    """Draw ``{label: [(x, y), ...]}`` on ``ax`` (one line with round markers each, sorted by ``x``).

    ``x``: a shared x for every series, whose values are then lists of ``y``. ``errors``: per series
    a spread (± std) for each of its points, drawn as error bars (``None``: no bar at that point).
    ``reference``: series of the same form drawn dashed with hollow markers and labelled
    ``"label (reference_label)"`` — in the colour of our series of that name, otherwise grey.
    ``xlog``/``ylog``: log-scaled axes (every value must be positive). ``hline``: a dashed goal
    line at ``y`` (``(y, label)`` names it in the legend). ``percent_x``/``percent_y``: values are
    fractions of 1, shown as percentages. ``None`` or NaN ``y`` values are left out.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if not series and not reference:
        raise SibaError("a line chart needs at least one series")
    errors = dict(errors or {})
    unknown = sorted(set(errors) - set(series))
    if unknown:
        raise SibaError(f"errors given for {', '.join(map(repr, unknown))}, which is not a series")
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for name, values in series.items():
        pts = _points(name, values, x)
        spread = errors.get(name)
        if spread is not None and len(spread) != len(pts):
            raise SibaError(f"errors for series {name!r} have {len(spread)} values for its {len(pts)} points")
        errs = [_number(e) for e in spread] if spread is not None else [None] * len(pts)
        if any(e is not None and e < 0 for e in errs):
            raise SibaError(f"errors for series {name!r} must not be negative")
        lines[name] = sorted((a, b, math.nan if e is None else e) for (a, b), e in zip(pts, errs) if b is not None)
    refs = {name: sorted((a, b) for a, b in _points(name, values, x) if b is not None)
            for name, values in (reference or {}).items()}
    if not any(lines.values()) and not any(refs.values()):
        raise SibaError("a line chart needs at least one point with a value")
    for name, pts in [*lines.items(), *refs.items()]:
        if xlog:
            _check_log("x", name, (p[0] for p in pts))
        if ylog:
            _check_log("y", name, (p[1] for p in pts))
    if ylim is not None and not (len(ylim) == 2 and float(ylim[0]) < float(ylim[1])):
        raise SibaError(f"ylim {ylim!r} is not (low, high) with low < high")

    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    handles: list[Any] = []  # the legend's entries in the order drawn (error bars would otherwise go last)
    for name, pts in lines.items():
        if not pts:
            continue
        xs, ys, es = (np.array(v, dtype=float) for v in zip(*pts))
        style = dict(color=colours[name], marker="o", markersize=4, linewidth=1.8, label=name, zorder=3)
        if errors.get(name) is not None:
            handles.append(ax.errorbar(xs, ys, yerr=es, capsize=3, elinewidth=1, **style))
        else:
            handles += ax.plot(xs, ys, **style)
    for name, pts in refs.items():
        if pts:
            xs, ys = (np.array(v, dtype=float) for v in zip(*pts))
            handles += ax.plot(xs, ys, color=colours.get(name, REFERENCE_COLOUR), linestyle="--", linewidth=1.2,
                               marker="o", markersize=4, markerfacecolor="white", label=f"{name} ({reference_label})",
                               zorder=2)
    if hline is not None:
        y, text = hline if isinstance(hline, tuple) else (hline, _label(float(hline), percent_y))
        handles.append(ax.axhline(float(y), color=REFERENCE_COLOUR, linestyle="--", linewidth=1, label=text, zorder=1))

    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    xs_all = sorted({p[0] for pts in [*lines.values(), *refs.values()] for p in pts})
    if xlog and len(xs_all) <= 12:  # few values (the rates of a sweep): a labelled tick at each
        ax.set_xticks(xs_all, [_label(v, percent_x) for v in xs_all])
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif percent_x or xlog:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _label(v, percent_x)))
        if xlog:
            ax.xaxis.set_minor_formatter(NullFormatter())
    if percent_y or ylog:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _label(v, percent_y)))
        if ylog:
            ax.yaxis.set_minor_formatter(NullFormatter())
    if ylim is not None:
        ax.set_ylim(float(ylim[0]), float(ylim[1]))
    ax.grid(alpha=0.3, which="major")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(handles=handles, fontsize=8)


def line_figure(series: Series, *, size: tuple[float, float] = SIZE, dpi: int = DPI, **kwargs: Any) -> "Figure":
    """A new figure with one axes drawn by :func:`plot_lines` (``kwargs`` are its options)."""
    fig = new_figure(*size, dpi=dpi)
    plot_lines(fig.add_subplot(), series, **kwargs)
    return fig


def line_chart(path: str | os.PathLike, series: Series, *, title: str = "", xlabel: str = "", ylabel: str = "",
               x: Sequence[float] | None = None, xlog: bool = False, ylog: bool = False,
               ylim: tuple[float, float] | None = None, hline: float | tuple[float, str] | None = None,
               percent_x: bool = False, percent_y: bool = False,
               errors: Mapping[str, Sequence[float | None]] | None = None, reference: Series | None = None,
               reference_label: str = "paper", legend: bool = True, size: tuple[float, float] = SIZE,
               dpi: int = DPI) -> Path:
    """Write a PNG line chart of ``{label: [(x, y), ...]}`` (``size`` in inches at ``dpi``: 640×400
    pixels by default); returns its path. The options are :func:`plot_lines`'s."""
    fig = line_figure(series, size=size, dpi=dpi, x=x, errors=errors, reference=reference,
                      reference_label=reference_label, title=title, xlabel=xlabel, ylabel=ylabel, xlog=xlog,
                      ylog=ylog, ylim=ylim, hline=hline, percent_x=percent_x, percent_y=percent_y, legend=legend)
    return save_figure(fig, path)
