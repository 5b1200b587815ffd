"""``siba reproduce``: the paper's tables and figures, each by one command, at the scale a machine allows.

>>> from siba.reproduce import ITEMS, run_item                       # doctest: +SKIP
>>> run_item(ITEMS.lookup("figure4"), "quick")                       # doctest: +SKIP

The items (:data:`ITEMS`, a :class:`siba.registry.Registry`) sit above the report: each runs its
grid through the one pipeline, then writes its page with the report's tables and figures.
"""

from .items import ITEMS, Context, PaperItem, Plan, list_items
from .runner import check_request, committed, item_table, parse_init, rejudge, run_item
from .scales import SCALES, attack_settings, base_config, recipe_line

__all__ = ["ITEMS", "SCALES", "Context", "PaperItem", "Plan", "attack_settings", "base_config", "check_request",
           "committed", "item_table", "list_items", "parse_init", "recipe_line", "rejudge",
           "run_item"]
