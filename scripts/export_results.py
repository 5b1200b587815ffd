"""Copy the results of a `siba run` folder into results/<name>/ for the repository.

    python scripts/export_results.py RUN_DIR results/cifar10-cpu [--rate R] [--merge]

Writes one JSON per attack at rate R (default: the lowest rate at which SIBA's ASR reaches
90%, else the highest rate run), with the keys attack, rate, ba, asr, clean_ba, train_acc,
l0, linf, ssim, psnr, the victim's recipe (epochs, crop_pad, flip, train_size; null for a run made
before siba recorded them), wall_s, command (fractions in [0, 1]), the victim's per-epoch curve (from its
metrics.csv) and the machine (--machine, else the one already in the file), and rate_sweep.json
with every (attack, rate) row of the run (each with its curve), plus a copy of the run's report and charts.
A run without a clean baseline of its own (``clean_baseline: false``) can be given the clean BA
measured elsewhere with ``--clean-ba 0.8839``; it fills the rows' empty ``clean_ba``.
``--merge`` keeps the rows of the folder's rate_sweep.json that the run does not have (a run folder
of a later session that holds only the new cells); the run's own rows replace those of the same
(attack, rate), and the rate is chosen over the merged rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from siba.experiments.pipeline import victim_dir
from siba.training import read_metrics

KEYS = ["attack", "rate", "ba", "asr", "asr_quantized", "asr_by_class", "clean_ba", "train_acc", "poison_fit", "l0",
        "l0_max", "linf", "ssim", "psnr", "num_poisoned", "epochs", "crop_pad", "flip", "train_size", "victim",
        "wall_s", "trigger_wall_s", "command"]


def curve(metrics_csv: Path) -> list[dict]:
    """The victim's per-epoch record: train accuracy (augmented batches), ASR and test accuracy where measured."""
    return [{"epoch": int(r["epoch"]), "train_acc_augmented": r.get("train_acc"), "asr": r.get("asr"),
             "test_acc": r.get("test_acc"), "wall_s": r.get("wall_s")} for r in read_metrics(metrics_csv)]


def with_curve(run: Path, r: dict) -> dict:
    """One (attack, rate) row of results.json with the KEYS and its victim's curve."""
    return {**{k: r.get(k) for k in KEYS}, "curve": curve(victim_dir(run, r["attack"], r["rate"]) / "metrics.csv")}


def _read(path: Path) -> dict:
    """A JSON file's object, or ``{}`` for a missing file or one that holds no object."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--machine", default=None, help="where the run ran, e.g. '2-core Intel Xeon, torch 2.13 CPU'")
    ap.add_argument("--clean-ba", type=float, default=None,
                    help="the clean model's BA (a fraction) for rows whose run had no clean baseline")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of OUT/rate_sweep.json that the run does not have")
    a = ap.parse_args()
    if a.clean_ba is not None and not 0 < a.clean_ba <= 1:
        ap.error("--clean-ba must be a fraction in (0, 1]")
    results = json.loads((a.run / "results.json").read_text())
    rows = results["results"]
    if a.clean_ba is not None:
        for r in rows:
            r["clean_ba"] = r.get("clean_ba") or a.clean_ba
    own = [{**with_curve(a.run, r), **({"machine": a.machine} if a.machine else {})} for r in rows]
    swept = own
    old_sweep = a.out / "rate_sweep.json"
    before = json.loads(old_sweep.read_text()) if a.merge and old_sweep.is_file() else {}
    if before:
        have = {(r["attack"], r["rate"]) for r in rows}
        kept = [r for r in before["rows"] if (r["attack"], r["rate"]) not in have]
        swept = sorted(kept + own, key=lambda r: (r["rate"], r["attack"]))
    rates = sorted({r["rate"] for r in swept})
    rate = a.rate
    if rate is None:
        good = [r["rate"] for r in swept if r["attack"] == "siba" and r["asr"] >= a.threshold]
        rate = min(good) if good else max(rates)
    a.out.mkdir(parents=True, exist_ok=True)
    for row in swept:
        if abs(row["rate"] - rate) < 1e-12:
            path = a.out / f"{row['attack']}.json"
            old = _read(path)
            same_cell = old.get("attack") == row["attack"] and old.get("rate") == row["rate"]
            machine = row.get("machine") or (old.get("machine") if same_cell else None)
            path.write_text(json.dumps({**row, "machine": machine}, indent=2) + "\n")
    # a merged folder keeps the run-level record (data, surrogate, clean baseline) it had: the later
    # run folder may hold only a few cells; each row says its own clean_ba, command and machine
    keys = ("data", "train_images", "surrogate", "clean", "command")
    run_info = {k: before.get(k) for k in keys} if before else {k: results.get(k) for k in keys}
    sweep = {**run_info, "chosen_rate": rate, "siba_reaches": a.threshold, "rows": swept}
    (a.out / "rate_sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")
    if before:  # the run's report and charts show only its own rows: the folder's are kept
        print("merged: report.md and the charts left as they were (scripts/plot_rate_sweeps.py draws the sweep)")
    else:
        for extra in ["report.md", "asr_vs_rate.png", *(p.name for p in a.run.glob("asr_during_training_*.png"))]:
            if (a.run / extra).is_file():
                shutil.copyfile(a.run / extra, a.out / extra)
        for trig in (a.run / "triggers").glob("*/trigger.png"):
            (a.out / "triggers" / trig.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trig, a.out / "triggers" / trig.parent.name / "trigger.png")
    rates_now = {p.name: _read(p).get("rate") for p in sorted(a.out.glob("*.json")) if p.name != "rate_sweep.json"}
    stale = [name for name, r in rates_now.items() if isinstance(r, (int, float)) and abs(r - rate) > 1e-12]
    if stale:
        print(f"note: {', '.join(stale)} in {a.out} are at another rate than {rate:g}")
    print(f"rate {rate:g}: wrote {sorted(p.name for p in a.out.glob('*.json'))} to {a.out}")


if __name__ == "__main__":
    main()
