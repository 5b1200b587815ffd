"""Draw the ASR-against-rate curves of several `rate_sweep.json` files in one chart.

    python scripts/plot_rate_sweeps.py OUT.png SWEEP.json[=LABEL] [SWEEP.json[=LABEL] ...] [--attacks siba,sparse]

Each (attack, file) pair becomes a line named ``attack`` or ``attack LABEL``; files given the same
LABEL (one sweep per seed) make one line, the mean with ± std error bars where a rate was run more
than once. The rate axis is log-scaled, as the paper's Figure 4; the dashed line is the 90% ASR
goal. Used for results/cifar10-cpu-strong/asr_vs_rate_both.png:

    python scripts/plot_rate_sweeps.py results/cifar10-cpu-strong/asr_vs_rate_both.png \\
        results/cifar10-cpu-small/rate_sweep.json="(small)" results/cifar10-cpu-strong/rate_sweep.json="(strong)"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from siba.report.markdown import asr_vs_rate_chart


def series_of(sweeps: list[tuple[dict, str]], attacks: list[str] | None = None) -> dict[str, list[tuple[float, float]]]:
    """``{name: [(rate %, ASR %), ...]}`` over the sweeps' rows, sorted by rate."""
    out: dict[str, list[tuple[float, float]]] = {}
    for sweep, label in sweeps:
        for row in sweep["rows"]:
            if attacks and row["attack"] not in attacks:
                continue
            name = f"{row['attack']} {label}".strip()
            out.setdefault(name, []).append((100 * row["rate"], 100 * row["asr"]))
    return {k: sorted(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("sweeps", nargs="+", metavar="SWEEP.json[=LABEL]")
    ap.add_argument("--attacks", default=None, help="comma-separated attacks to draw (default: all)")
    a = ap.parse_args(argv)
    sweeps = []
    for item in a.sweeps:
        path, _, label = item.partition("=")
        try:
            sweeps.append((json.loads(Path(path).read_text()), label))
        except (OSError, ValueError) as e:
            print(f"error: cannot read the sweep {path}: {e}", file=sys.stderr)
            return 2
    series = series_of(sweeps, a.attacks.split(",") if a.attacks else None)
    if not series:
        print("error: no rows to draw", file=sys.stderr)
        return 2
    asr_vs_rate_chart(a.out, series)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
