from __future__ import annotations

from PIL import Image

from siba.report.plot import _plain, line_chart


def test_labels_the_builtin_font_cannot_draw_are_spelled_out():
    assert _plain("α=0.05·ε") == "alpha=0.05*eps"
    assert _plain("k ≤ 100 × 3") == "k <= 100 x 3"
    assert _plain("naïve") == "naïve"  # Latin-1 is drawn as is


def test_line_chart_writes_a_png(tmp_path):
    out = line_chart(tmp_path / "c.png", {"α=0.2·ε": [(1, 2.0), (2, 3.0)], "b": [(1, 1.0), (2, float("nan"))]},
                     title="t", xlabel="passes", ylabel="%")
    with Image.open(out) as im:
        assert im.size == (640, 400) and im.mode == "RGB"
        assert len(im.getcolors(1 << 16)) > 3  # lines and text were drawn
