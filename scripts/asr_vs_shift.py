"""ASR against the crop offset at test time: where a trigger goes when the victim's crop moves it.

    python scripts/asr_vs_shift.py RUN --victim siba-r0.01 [--victim siba-eot-r0.01 ...] \\
        [--max-shift 4] [--test-fraction 0.2] [--out results/NAME/asr_vs_shift]

For each victim of a run folder (`victims/<attack>-r<rate>/`, its model and the trigger of its
attack) every poisoned test image is seen at every offset ``(dy, dx)`` in ``−s..s`` (the image,
trigger and all, translated with zero fill, as a pad-``s`` crop shows it), and the ASR is
measured there (on a seeded, class-stratified share of the test set with --test-fraction: the
grid costs (2s+1)² passes over it). Writes ``OUT.json`` (per victim the (2s+1)×(2s+1) grid and its centre row and
column, with the command and the machine) and ``OUT.png`` (ASR against the horizontal and the
vertical offset, one line per victim).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    from siba.attacks import load_trigger
    from siba.data import load_dataset
    from siba.errors import SibaError
    from siba.experiments.config import share
    from siba.metrics.attack import asr_under_shifts
    from siba.models import load_model
    from siba.runtime import machine_info, pick_device, read_json, setup_threads, write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a siba run folder")
    ap.add_argument("--victim", action="append", required=True, help="victim folder name, e.g. siba-r0.01")
    ap.add_argument("--max-shift", type=int, default=4)
    ap.add_argument("--out", default=None, help="output path without suffix (default RUN/asr_vs_shift)")
    ap.add_argument("--test-fraction", type=float, default=1.0,
                    help="measure on this seeded, class-stratified share of the test set (default: all of it)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    run = Path(args.run)
    try:
        if not (run / "config.json").is_file():
            raise SibaError(f"{run} is not a siba run folder (no config.json)")
        missing = [v for v in args.victim if not (run / "victims" / v / "model.safetensors").is_file()]
        if missing:
            raise SibaError(f"no finished victim {', '.join(missing)} in {run / 'victims'}")
        cfg = read_json(run / "config.json")["config"]
        fraction = share(args.test_fraction, "--test-fraction")
        setup_threads()
        device = pick_device(args.device)
        test_set = load_dataset(cfg["data"], cfg.get("image_size")).test.fraction(fraction, 0)
        out = {"command": "python scripts/asr_vs_shift.py " + " ".join(shlex.quote(a) for a in argv),
               "machine": machine_info(device),
               "test_images": len(test_set), "victims": {}}
        for name in args.victim:
            folder = run / "victims" / name
            attack = name.rsplit("-r", 1)[0]
            model = load_model(folder / "model.safetensors", device)
            mark = load_trigger(run / "triggers" / attack / "trigger.safetensors")
            res = asr_under_shifts(model, test_set, mark, max_shift=args.max_shift)
            out["victims"][name] = res
            print(f"{name}: ASR at offset 0 {res['asr_dx'][args.max_shift]:.4f}; along x "
                  + " ".join(f"{v:.3f}" for v in res["asr_dx"]))
    except SibaError as exc:
        print(f"asr_vs_shift: error: {exc}", file=sys.stderr)
        return 2
    dest = str(args.out) if args.out else str(run / "asr_vs_shift")  # the suffixes are added: OUT may hold a dot
    write_json(Path(dest + ".json"), out)
    plot(out, Path(dest + ".png"))
    print(f"wrote {dest}.json and {dest}.png")
    return 0


def plot(result: dict, path: Path) -> None:
    """ASR against the horizontal and the vertical offset, one line per victim, the 90% goal dashed."""
    from siba.figures import new_figure, plot_lines, save_figure

    fig = new_figure(8, 3.2)
    axes = fig.subplots(1, 2, sharey=True)
    for i, (ax, what, key) in enumerate(zip(axes, ("horizontal", "vertical"), ("asr_dx", "asr_dy"))):
        series = {name: list(zip(res["offsets"], (100 * v for v in res[key])))
                  for name, res in result["victims"].items()}
        plot_lines(ax, series, xlabel=f"{what} crop offset at test time (pixels)", ylabel="ASR (%)" if i == 0 else "",
                   ylim=(0, 100), hline=(90.0, "90%"), legend=i == 1)
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
