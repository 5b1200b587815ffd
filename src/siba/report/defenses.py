"""The summary of defenses run against a run's victims: one row per (victim, defense), the
numbers each kind of defense is judged by, as Markdown and JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..runtime import atomic_path, read_json, write_json

# the numbers a summary row keeps, by the defense's kind (``metrics`` keys of its result.json)
SUMMARY_KEYS = {
    "detection": ("auroc", "tpr", "fpr", "asr_before", "asr_left"),
    "repair": ("ba_before", "asr_before", "ba_after", "asr_after"),
    "training": ("ba_before", "asr_before", "ba_after", "asr_after", "isolation_precision", "isolation_recall"),
    "inspection": ("anomaly_index", "flagged", "target_flagged", "trigger_share", "clean_share"),
}


def summary_row(victim: str, result: dict[str, Any]) -> dict[str, Any]:
    """The row of one defense's ``result.json``: its kind's numbers, flattened."""
    metrics = result.get("metrics") or {}
    keep = SUMMARY_KEYS.get(result.get("kind", ""), ())
    row: dict[str, Any] = {"victim": victim, "defense": result.get("defense"), "kind": result.get("kind"),
                           "command": result.get("command"), "wall_s": result.get("wall_s")}
    for key in keep:
        if key in metrics:
            row[key] = metrics[key]
    scores = metrics.get("scores") if isinstance(metrics.get("scores"), dict) else {}
    if "anomaly_indices" in scores:  # Neural Cleanse: the detection statistic, and the attack's target's index
        row["anomaly_index"] = scores.get("max_anomaly_index_below_median")
        if "target_mask_on_trigger" in scores:  # where the target's reversed mask lies: on the trigger or not
            row["target_mask_on_trigger"] = scores["target_mask_on_trigger"]
            row["trigger_region_share"] = scores.get("trigger_region_share")
        target = metrics.get("target")
        if isinstance(target, int) and 0 <= target < len(scores["anomaly_indices"]):
            row["target_anomaly_index"] = scores["anomaly_indices"][target]
    if "mass_share_poisoned" in scores:  # Grad-CAM: saliency on the trigger's pixels, poisoned and clean
        row["trigger_share"] = scores["mass_share_poisoned"]
        row["clean_share"] = scores.get("mass_share_clean")
        row["share_ratio"] = scores.get("share_ratio")
    return row


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "none"
    return str(v)


def write_summary(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Collect every ``<folder>/<defense>/<victim>/result.json`` into ``summary.json`` and ``summary.md``."""
    root = Path(folder)
    rows = []
    for res in sorted(root.glob("*/*/result.json")):
        rows.append(summary_row(res.parent.name, read_json(res)))
    write_json(root / "summary.json", rows)
    lines = ["# Defenses", ""]
    for kind in ("detection", "repair", "training", "inspection"):
        part = [r for r in rows if r["kind"] == kind]
        if not part:
            continue
        shown = ("victim", "defense", "kind", "command")  # the first two are columns; command is in the JSON
        keys = [k for k in dict.fromkeys(k for r in part for k in r) if k not in shown]
        lines += [f"## {kind}", "", "| victim | defense | " + " | ".join(keys) + " |",
                  "|---|---|" + "---:|" * len(keys)]
        lines += [f"| {r['victim']} | {r['defense']} | " + " | ".join(_cell(r.get(k)) for k in keys) + " |"
                  for r in part]
        lines.append("")
    with atomic_path(root / "summary.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return rows
