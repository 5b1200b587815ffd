"""siba.figures: the charts of the report, the defenses, the scripts and the benchmarks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from siba.errors import SibaError
from siba.figures import PALETTE, line_chart, line_figure, mean_std, new_figure, plot_lines, save_figure

SERIES = {"siba": [(0.5, 40.0), (1, 80.0), (2, 95.0)], "badnets": [(0.5, 90.0), (1, 99.0), (2, float("nan"))]}


def _lines(ax, label):
    return [ln for ln in ax.get_lines() if ln.get_label() == label]


def test_line_chart_writes_the_same_png_twice(tmp_path):
    kwargs = dict(title="ASR against the rate (α=0.2·ε, k ≤ 100)", xlabel="rate (%)", ylabel="ASR (%)", xlog=True,
                  ylim=(0, 100), hline=(90.0, "90%"), errors={"siba": [5.0, None, 1.5]})
    first = line_chart(tmp_path / "a.png", SERIES, **kwargs)
    second = line_chart(tmp_path / "sub" / "b.png", SERIES, **kwargs)
    assert first == tmp_path / "a.png" and second.parent.name == "sub"
    png = first.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png == second.read_bytes()  # deterministic: no version, no time stamp
    assert b"Matplotlib" not in png and b"matplotlib" not in png
    with Image.open(first) as im:
        assert im.size == (640, 400)
        assert len(im.convert("RGB").getcolors(1 << 16)) > 50  # lines, markers and text were drawn
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "b.png", "sub"]  # no temporary file left


def test_size_and_dpi_give_the_pixels(tmp_path):
    with Image.open(line_chart(tmp_path / "c.png", SERIES, size=(3.0, 2.0), dpi=80)) as im:
        assert im.size == (240, 160)


def test_log_rate_axis_has_a_labelled_tick_at_each_rate():
    ax = line_figure(SERIES, xlog=True).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert list(ax.get_xticks()) == [0.5, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "2"]
    assert line_figure(SERIES).axes[0].get_xscale() == "linear"
    fractions = {"siba": [(0.001, 0.4), (0.01, 0.9)]}
    ax = line_figure(fractions, xlog=True, percent_x=True, percent_y=True, ylim=(0, 1)).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1%", "1%"]
    assert ax.yaxis.get_major_formatter()(0.9, 0) == "90%"


def test_error_bars_only_for_the_series_given_errors():
    ax = line_figure(SERIES, errors={"siba": [5.0, None, 1.5]}).axes[0]
    assert len(ax.containers) == 1
    assert ax.containers[0].get_label() == "siba"
    assert len(line_figure(SERIES).axes[0].containers) == 0
    ax = line_figure(SERIES, errors={"siba": [1, 1, 1], "badnets": [2, 2, 2]}).axes[0]
    assert len(ax.containers) == 2


def test_goal_line_is_drawn_dashed_and_labelled():
    ax = line_figure(SERIES, ylim=(0, 100), hline=(90.0, "90%")).axes[0]
    (goal,) = _lines(ax, "90%")
    assert list(goal.get_ydata()) == [90.0, 90.0] and goal.get_linestyle() == "--"
    assert "90%" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_ylim() == (0, 100)
    ax = line_figure({"a": [(1, 0.5), (2, 0.95)]}, hline=0.9, percent_y=True).axes[0]
    assert len(_lines(ax, "90%")) == 1  # a bare value is labelled by itself
    assert not _lines(line_figure(SERIES).axes[0], "90%")


def test_series_are_sorted_and_skip_missing_values():
    ax = line_figure({"a": [(3, 3.0), (1, 1.0), (2, None)]}, legend=False).axes[0]
    (line,) = _lines(ax, "a")
    assert list(line.get_xdata()) == [1, 3] and list(line.get_ydata()) == [1.0, 3.0]
    assert ax.get_legend() is None
    ax = line_figure({"a": [1.0, 2.0], "b": [3.0, 4.0]}, x=[10, 20]).axes[0]  # a shared x
    assert list(_lines(ax, "b")[0].get_xdata()) == [10, 20]


def test_reference_series_are_dashed_beside_ours():
    ax = line_figure(SERIES, reference={"siba": [(1, 97.6)], "blended": [(1, 90.0)]}).axes[0]
    (ours,) = _lines(ax, "siba")
    (paper,) = _lines(ax, "siba (paper)")
    (other,) = _lines(ax, "blended (paper)")
    assert paper.get_linestyle() == "--" and ours.get_linestyle() == "-"
    assert paper.get_color() == ours.get_color() == PALETTE[0]
    assert other.get_color() == "#888888"  # no series of ours by that name: grey
    assert _lines(line_figure(SERIES, reference={"siba": [(1, 97.6)]}, reference_label="TIFS").axes[0],
                  "siba (TIFS)")


@pytest.mark.parametrize("series, kwargs, message", [
    ({}, {}, "at least one series"),
    ({"a": []}, {}, "at least one point"),
    ({"a": [(1, None)]}, {}, "at least one point"),
    ({"a": [(1, 2, 3)]}, {}, "not an (x, y) pair"),
    ({"a": [5]}, {}, "not an (x, y) pair"),
    ({"a": "oops"}, {}, "not a list of points"),
    ({"a": [(None, 1)]}, {}, "no finite x"),
    ({"a": [("x", 1)]}, {}, "is not a number"),
    ({"a": [1.0, 2.0, 3.0]}, {"x": [1, 2]}, "has 3 y values for 2 x values"),
    ({"a": [(0, 1.0), (1, 2.0)]}, {"xlog": True}, "log x axis needs positive values; series 'a' has 0"),
    ({"a": [(1, -1.0)]}, {"ylog": True}, "log y axis needs positive values"),
    ({"a": [(1, 1.0)]}, {"reference": {"p": [(-1, 1.0)]}, "xlog": True}, "series 'p' has -1"),
    ({"a": [(1, 1.0), (2, 2.0)]}, {"errors": {"a": [1.0]}}, "have 1 values for its 2 points"),
    ({"a": [(1, 1.0)]}, {"errors": {"b": [1.0]}}, "which is not a series"),
    ({"a": [(1, 1.0)]}, {"errors": {"a": [-1.0]}}, "must not be negative"),
    ({"a": [(1, 1.0)]}, {"ylim": (1, 0)}, "low < high"),
])
def test_bad_input_is_a_one_line_error(tmp_path, series, kwargs, message):
    with pytest.raises(SibaError) as err:
        line_chart(tmp_path / "bad.png", series, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing written


def test_mean_std_groups_the_seeds_of_each_x():
    points, errors = mean_std([(1, 10.0), (2, 50.0), (1, 20.0), (1, 30.0), (4, None)])
    assert points == [(1, 20.0), (2, 50.0)]
    assert errors == [pytest.approx(10.0), None]  # sample std; one seed: no bar
    assert mean_std([]) == ([], [])


def test_plot_lines_draws_on_a_panel_of_a_larger_figure(tmp_path):
    fig = new_figure(8, 3.2)
    left, right = fig.subplots(1, 2, sharey=True)
    plot_lines(left, SERIES, hline=(90.0, "90%"), legend=False)
    plot_lines(right, SERIES, xlog=True)
    assert left.get_legend() is None and right.get_legend() is not None
    with Image.open(save_figure(fig, tmp_path / "two.png", dpi=50)) as im:
        assert im.size == (400, 160)


def test_asr_vs_rate_chart_is_the_papers_figure_4(tmp_path, monkeypatch):
    import siba.figures as figures
    from siba.report.markdown import asr_vs_rate_chart

    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(figures, "save_figure", lambda fig, path, **kw: drawn.append(fig) or save(fig, path, **kw))
    two_seeds = {"siba": [(1, 80.0), (0.5, 40.0), (1, 90.0)], "badnets": [(0.5, 99.0), (1, 100.0)]}
    out = asr_vs_rate_chart(tmp_path / "asr_vs_rate.png", two_seeds, reference={"siba": [(1, 97.6)]})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = drawn[0].axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylim() == (0, 100)
    assert len(_lines(ax, "90%")) == 1 and len(_lines(ax, "siba (paper)")) == 1
    assert [c.get_label() for c in ax.containers] == ["siba"]  # the rate run with two seeds
    data_line = ax.containers[0].lines[0]
    assert list(data_line.get_xdata()) == [0.5, 1] and list(data_line.get_ydata()) == [40.0, 85.0]


def test_figure2_is_deterministic(tmp_path):
    import torch

    from siba.report.table import figure2

    class Shift:
        def apply_uint8(self, x):
            return (x.int() + 8).clamp(0, 255).to(torch.uint8)

    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    a = figure2({"shift": Shift()}, image, tmp_path / "a.png", {"shift": "Shift"})
    b = figure2({"shift": Shift()}, image, tmp_path / "b.png", {"shift": "Shift"})
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()[:4] == b"\x89PNG"


def test_no_chart_uses_pyplot(tmp_path):
    code = (
        "import sys, torch\n"
        "from siba.figures import line_chart\n"
        "from siba.report.markdown import asr_vs_rate_chart\n"
        "from siba.report.table import figure2\n"
        "from siba.defenses.figures import histograms\n"
        f"d = {str(tmp_path)!r}\n"
        "line_chart(d + '/a.png', {'a': [(1, 1.0), (2, 2.0)]})\n"
        "asr_vs_rate_chart(d + '/b.png', {'a': [(1, 1.0), (2, 2.0)]})\n"
        "histograms(d + '/c.png', {'clean': [1.0, 2.0]}, xlabel='x', title='t')\n"
        "class M:\n"
        "    def apply_uint8(self, x): return x\n"
        "figure2({'m': M()}, torch.zeros(3, 4, 4, dtype=torch.uint8), d + '/d.png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
