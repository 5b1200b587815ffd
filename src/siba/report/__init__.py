"""Reports: markdown with tables, charts (Pillow) and trigger images."""

from .images import render_trigger, trigger_visual
from .markdown import results_table, write_report
from .plot import line_chart

__all__ = ["line_chart", "render_trigger", "results_table", "trigger_visual", "write_report"]
