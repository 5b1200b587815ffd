"""Reports: markdown with tables, charts (:mod:`siba.figures`, matplotlib) and trigger images."""

from ..figures import line_chart
from .images import render_trigger, trigger_visual
from .markdown import results_table, write_report

__all__ = ["line_chart", "render_trigger", "results_table", "trigger_visual", "write_report"]
