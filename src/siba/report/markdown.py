"""``report.md`` of a run: the settings, the metrics table, curves and trigger images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..figures import line_chart, mean_std
from ..runtime import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from ..attacks.trigger import Trigger
    from ..experiments.config import RunConfig


def pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}"


def num(v: Any, fmt: str = ".3f") -> str:
    return "–" if v is None else format(float(v), fmt)


def results_table(rows: list[dict[str, Any]]) -> str:
    head = ("| attack | rate | BA % | ASR % | ASR 8-bit % | train acc % | poisons fit % | L0 | L∞ | SSIM | PSNR dB |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['attack']} | {100 * r['rate']:g}% | {pct(r.get('ba'))} | **{pct(r.get('asr'))}** | "
                     f"{pct(r.get('asr_quantized'))} | {pct(r.get('train_acc'))} | {pct(r.get('poison_fit'))} | "
                     f"{num(r.get('l0'), '.1f')} | {num(r.get('linf'), '.4f')} | {num(r.get('ssim'), '.4f')} | "
                     f"{num(r.get('psnr'), '.1f')} |")
    return "\n".join(lines)


def by_class_table(rows: list[dict[str, Any]], classes: list[str] | None = None) -> str:
    """ASR % of each source class (columns) for every victim evaluated with ``asr_by_class``; '' if none."""
    rows = [r for r in rows if r.get("asr_by_class")]
    if not rows:
        return ""
    n = len(rows[0]["asr_by_class"])
    names = list(classes) if classes and len(classes) == n else [str(c) for c in range(n)]
    lines = ["| attack | rate | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * n]
    for r in rows:
        lines.append(f"| {r['attack']} | {100 * r['rate']:g}% | " + " | ".join(map(pct, r["asr_by_class"])) + " |")
    return "\n".join(lines)


def epoch_series(metrics_csv: Path, column: str) -> list[tuple[int, float]]:
    """``[(epoch, value), ...]`` of one column of a trainer's ``metrics.csv`` (epochs where it was measured)."""
    from ..training import read_metrics

    return [(int(r["epoch"]), r[column]) for r in read_metrics(metrics_csv) if r.get(column) is not None]


# The dashed line on the ASR charts: the success the paper's Table I reports (SIBA >= 90% at 1%).
ASR_GOAL = (90.0, "90%")


def asr_vs_rate_chart(path: Path, series: dict[str, list[tuple[float, float]]],
                      reference: dict[str, list[tuple[float, float]]] | None = None) -> Path:
    """The ASR-against-rate chart of ``{line: [(rate %, ASR %), ...]}`` as the paper's Figure 4: the
    rate on a log axis, the 90% goal dashed. A rate a line holds more than once (one point per
    seed) is drawn as the mean with a ± std error bar; ``reference`` (the paper's numbers, same
    form) is drawn dashed beside ours."""
    points, errors = {}, {}
    for name, pts in series.items():
        points[name], spread = mean_std(pts, name)
        if any(e is not None for e in spread):
            errors[name] = spread
    return line_chart(path, points, title="ASR against poisoning rate", xlabel="poisoning rate (%, log scale)",
                      ylabel="ASR (%)", xlog=True, ylim=(0, 100), hline=ASR_GOAL, errors=errors,
                      reference=reference)


def asr_curves(out: Path, rows: list[dict[str, Any]]) -> list[str]:
    """One chart per rate of every finished victim's ASR after each epoch (runs with ``track_asr``)."""
    from ..experiments.pipeline import rate_tag, victim_dir

    lines: list[str] = []
    for rate in sorted({r["rate"] for r in rows}):
        series = {}
        for r in rows:
            if r["rate"] == rate:
                curve = epoch_series(victim_dir(out, r["attack"], rate) / "metrics.csv", "asr")
                if len(curve) > 1:
                    series[r["attack"]] = [(e, 100 * v) for e, v in curve]
        if series:
            name = f"asr_during_training_{rate_tag(rate)}.png"
            line_chart(out / name, series, title=f"ASR during victim training, {100 * rate:g}% poisoned",
                       xlabel="epoch", ylabel="ASR (%)", ylim=(0, 100), hline=ASR_GOAL)
            lines += [f"![ASR after each epoch of victim training at {100 * rate:g}%]({name})", ""]
    return lines


def surrogate_line(cfg: "RunConfig") -> str:
    """The report's surrogate setting: the trained model and its epochs, or the file it was loaded from."""
    stage = cfg.surrogate
    if stage.path is None:
        return f"- surrogate: `{stage.model}` {stage.model_args or ''}, {stage.train.epochs} epochs"
    arch, kwargs = stage.model, stage.model_args
    try:  # the file says what it holds; the config's model name is not used for a loaded surrogate
        from ..models import read_model_metadata

        spec = read_model_metadata(stage.path).get("siba_model") or {}
        arch, kwargs = spec.get("arch", arch), spec.get("kwargs", kwargs)
    except Exception:  # a report of a finished run must not fail on a moved or foreign file
        pass
    return f"- surrogate: loaded from `{stage.path}` (`{arch}`{f' {kwargs}' if kwargs else ''})"


def write_report(out: str | os.PathLike, cfg: "RunConfig", results: dict[str, Any],
                 marks: dict[str, "Trigger"]) -> Path:
    out = Path(out)
    rows = results["results"]
    lines = [f"# siba run: {cfg.name}", ""]
    if cfg.description:
        lines += [cfg.description.strip(), ""]
    sur, clean = results.get("surrogate") or {}, results.get("clean") or {}
    lines += [
        "## Settings", "",
        f"- data: `{cfg.data}` ({results['train_images']} training / {results['test_images']} test images); "
        f"target rule: {'all-to-all' if cfg.all_to_all else f'all-to-one, target class {cfg.target}'}; seed {cfg.seed}",
        surrogate_line(cfg)
        + (f", test accuracy {pct(sur.get('test_acc'))}%" if sur.get("test_acc") is not None else ""),
        f"- victim: `{cfg.victim.model}` {cfg.victim.model_args or ''}, {cfg.victim.train.epochs} epochs, "
        f"{cfg.victim.train.schedule} schedule, lr {cfg.victim.train.lr:g}, batch {cfg.victim.train.batch_size}, "
        f"augmentation: crop pad {cfg.victim.train.crop_pad}, flip {cfg.victim.train.flip}",
        f"- clean victim (no attack): BA {pct(clean.get('test_acc'))}%" if clean else "- clean victim: not trained",
        f"- total time: {results.get('wall_s', 0):.0f} s", "",
        "## Results", "",
        "BA: accuracy on the clean test set. ASR: share of attacked test images classified as the target "
        "(float trigger; '8-bit': as a released PNG carries it). Train acc: accuracy on the poisoned training set "
        "without augmentation; poisons fit: share of poisoned training images the victim labels as their target. "
        "L0 (changed pixels), L∞, SSIM and PSNR: clean vs poisoned test images.", "",
        results_table(rows), "",
    ]
    per_class = by_class_table(rows, results.get("classes"))
    if per_class:
        lines += ["ASR by the true class of the attacked test image (– : not attacked, the target class):", "",
                  per_class, ""]
    if len({r["rate"] for r in rows}) > 1:  # a chart needs more than one finished rate
        series = {a: [(100 * r["rate"], 100 * r["asr"]) for r in rows if r["attack"] == a] for a in cfg.attacks}
        asr_vs_rate_chart(out / "asr_vs_rate.png", series)
        lines += ["![ASR against the poisoning rate](asr_vs_rate.png)", ""]
    lines += asr_curves(out, rows)
    lines += ["## Triggers", "",
              "Each image: the trigger (grey = no change, scaled to its largest change), then clean, poisoned "
              "(8-bit) and the amplified difference for test images.", ""]
    for name, mark in marks.items():
        desc = mark.describe()
        budget = f"k = {desc['k']}, ε = {desc['eps']:.4f} ({255 * desc['eps']:.1f}/255)" if "k" in desc else ""
        lines += [f"### {name}", "", budget, "", f"![{name} trigger](triggers/{name}/trigger.png)", ""]
    lines += ["## Files", "",
              "`results.json` (every number above), `triggers/<attack>/trigger.safetensors` (+ `.json`), "
              "`victims/<attack>-r<rate>/` (model, `metrics.csv`, `eval.json`, `poison.json`).", ""]
    if results.get("command"):
        lines += ["Produced by:", "", f"    {results['command']}", ""]
    path = out / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path
