"""Copy the results of ``siba defend`` from a run folder into ``results/``: the summary, each
defense's ``result.json`` (which names the command that made it and the machine) and its figures,
and a README that lists the commands, the machines and each defense's wall time. Results already in
the output folder (an earlier export's) are kept and listed too.

    python scripts/export_defenses.py runs/table1-cifar10-cpu/defenses results/defenses-cifar10-cpu \
        --title "Defenses on the full CIFAR-10 (CPU config)"

Models and other large files that a defense keeps (e.g. ABL's or Fine-Pruning's repaired model) are
left in the run folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from siba.errors import SibaError  # noqa: E402
from siba.report.defenses import write_summary  # noqa: E402
from siba.runtime import read_json  # noqa: E402

KEEP = (".json", ".png", ".md", ".csv")


def export(src: Path, out: Path, title: str) -> list[dict]:
    results = sorted(src.glob("*/*/result.json"))
    if not results:
        raise SibaError(f"{src} holds no defense results (<defense>/<victim>/result.json)")
    out.mkdir(parents=True, exist_ok=True)
    for res in results:
        dest = out / res.parent.relative_to(src)
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(res.parent.iterdir()):
            if f.is_file() and f.suffix in KEEP:
                shutil.copyfile(f, dest / f.name)
    rows = write_summary(out)
    lines = [f"# {title}", "", "Made by these commands, each on the machine it names "
             "(`<defense>/<victim>/result.json` has the settings, the metrics and the data used):", ""]
    for res in sorted(out.glob("*/*/result.json")):  # every result there, earlier exports' included
        r = read_json(res)
        m = r.get("machine") or {}
        where = (f"{m.get('cores', '?')}-core {m.get('cpu', '?')}, torch {m.get('torch', '?')}" if m
                 else "machine not recorded")
        lines.append(f"- `{r.get('command') or '(command not recorded)'}` → `{res.parent.relative_to(out)}/`: "
                     f"{r.get('wall_s', float('nan')):.0f} s ({where})")
    lines += ["", "The numbers: [summary.md](summary.md) (and summary.json).", ""]
    (out / "README.md").write_text("\n".join(lines))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="a defenses folder: RUN/defenses")
    ap.add_argument("out", help="where to write, e.g. results/defenses-cifar10-cpu")
    ap.add_argument("--title", default="Defenses")
    args = ap.parse_args(argv)
    try:
        rows = export(Path(args.src), Path(args.out), args.title)
    except SibaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(rows)} results → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
