"""The paper's Table I layout for a run: one row per attack, our numbers beside the paper's.

``write_table`` writes ``table.md``, ``table.csv`` and ``table.json`` (a list of rows: ``attack``,
``rate``, ``ba``, ``asr``, ``asr_quantized``, ``l0``, ``linf``, ``linf_mean``, ``lpips``, ``ssim``,
``psnr`` — shares as fractions in [0, 1] — ``paper``: the paper's row, its shares as fractions too, and
``command``: what made the row), and
``figure2.png``: one test image poisoned by every attack, with the amplified difference (the
paper's Figure 2).

L∞ is printed as the paper measures it: the mean over the test images of each image's largest
change (``linf_mean``; BadNets' 3×3 checkerboard gives 0.81, the paper's figure, where the largest
change over all images, ``linf``, is 1).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..runtime import atomic_path, write_json

COLUMNS = ("ba", "asr", "asr_quantized", "l0", "linf", "linf_mean", "lpips", "ssim", "psnr")
LABELS = {"clean": "No attack", "badnets": "BadNets", "blended": "Blended", "tuap": "TUAP", "wanet": "WaNet",
          "issba": "ISSBA", "ubw-p": "UBW-P", "random": "Random", "sparse": "Sparse", "siba": "SIBA"}
SHARES = ("ba", "asr")


def table_rows(results: dict[str, Any], kinds: dict[str, str],
               paper: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The table's rows from a run's ``results.json``: the clean model first, then each victim.

    ``kinds`` maps a config's attack name to its attack kind (``siba``, ``badnets``, ...), which
    picks the paper's row; the paper's BA and ASR (percent) become fractions."""
    def paper_row(kind: str) -> dict[str, Any] | None:
        if not paper or kind not in paper:
            return None
        return {k: (v / 100 if k in SHARES and v is not None else v) for k, v in paper[kind].items()}

    rows = []
    clean = results.get("clean") or {}
    if clean.get("test_acc") is not None:
        rows.append({"attack": "clean", "kind": "clean", "rate": 0.0, "ba": clean["test_acc"],
                     **{k: None for k in COLUMNS if k != "ba"}, "paper": paper_row("clean"),
                     "command": clean.get("command")})
    for r in results.get("results", []):
        kind = kinds.get(r["attack"], r["attack"])
        rows.append({"attack": r["attack"], "kind": kind, "rate": r["rate"], **{k: r.get(k) for k in COLUMNS},
                     "lpips_image_size": r.get("lpips_image_size"), "dispersibility": r.get("dispersibility"),
                     "paper": paper_row(kind), "command": r.get("command")})
    return rows


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}"


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(float(v), fmt)


def _pair(ours: str, paper: str) -> str:
    return f"{ours} ({paper})" if paper != "–" else ours


def markdown_table(rows: Sequence[dict[str, Any]], paper_name: str | None = None) -> str:
    """Markdown: each cell ours, the paper's in brackets where it prints one."""
    head = ["attack", "rate", "BA %", "ASR %", "ASR 8-bit %", "L0 px", "L∞ (mean)", "LPIPS", "SSIM", "PSNR dB"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for r in rows:
        p = r.get("paper") or {}
        label = LABELS.get(r["kind"], r["attack"]) + ("" if r["attack"] == r["kind"] else f" (`{r['attack']}`)")
        lines.append("| " + " | ".join([
            f"**{label}**" if r["kind"] == "siba" else label,
            "–" if r["kind"] == "clean" else f"{100 * r['rate']:g}%",
            _pair(_pct(r["ba"]), _pct(p.get("ba"))),
            _pair(_pct(r["asr"]), _pct(p.get("asr"))),
            _pct(r["asr_quantized"]),
            _pair(_num(r["l0"], ".1f"), _num(p.get("l0"), ",.0f")),
            _pair(_num(r.get("linf_mean"), ".3f"), _num(p.get("linf"), ".2f")),
            _pair(_num(r["lpips"], ".4f"), _num(p.get("lpips"), ".3f")),
            _pair(_num(r["ssim"], ".3f"), _num(p.get("ssim"), ".3f")),
            _num(r["psnr"], ".1f"),
        ]) + " |")
    # a blank line first: GitHub's Markdown reads a line right below a table as one more row
    note = f"\n\nIn brackets: the paper's {paper_name}." if paper_name else "\n"
    note += ("\nL∞ (mean): each image's largest change, averaged over the test images, as the paper measures "
             "it; the largest over all images is `linf` in table.json.")
    return "\n".join(lines) + note


def csv_table(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    keys = ["attack", "kind", "rate", *COLUMNS, *(f"paper_{k}" for k in ("ba", "asr", "l0", "linf", "lpips", "ssim"))]
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        p = r.get("paper") or {}
        w.writerow({**{k: r.get(k) for k in keys[:3 + len(COLUMNS)]},
                    **{f"paper_{k}": p.get(k) for k in ("ba", "asr", "l0", "linf", "lpips", "ssim")}})
    return buf.getvalue()


def figure2(marks: dict[str, Any], image: torch.Tensor, path: str | os.PathLike,
            labels: dict[str, str] | None = None) -> Path:
    """One uint8 ``C×H×W`` test image poisoned by every trigger: clean, poisoned (8-bit) and the
    difference amplified to the full range (grey: no change), one row per attack."""
    from ..figures import new_figure, save_figure

    names = list(marks)
    fig = new_figure(4.2, 1.45 * len(names) + 0.4)
    axes = fig.subplots(len(names), 3, squeeze=False)
    clean = image.float() / 255
    for i, name in enumerate(names):
        poisoned = marks[name].apply_uint8(image.unsqueeze(0).to(torch.uint8))[0].float() / 255
        diff = poisoned - clean
        peak = float(diff.abs().max()) or 1.0
        for j, (title, img) in enumerate((("clean", clean), ("poisoned", poisoned),
                                          (f"difference ×{1 / (2 * peak):.0f}", 0.5 + diff / (2 * peak)))):
            ax = axes[i][j]
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), interpolation="nearest",
                      cmap="gray" if img.shape[0] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 or j == 2:
                ax.set_title(title, fontsize=7)
            if j == 0:
                ax.set_ylabel((labels or {}).get(name, name), fontsize=8)
    return save_figure(fig, path, dpi=110)


def write_table(out_dir: str | os.PathLike, results: dict[str, Any], marks: dict[str, Any], kinds: dict[str, str],
                test_image: torch.Tensor | None, paper: dict[str, dict[str, Any]] | None = None,
                paper_name: str | None = None, test_images: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Write ``table.{md,csv,json}`` and ``figure2.png`` into ``out_dir``; returns the rows.

    ``test_images`` (uint8): a row evaluated before ``linf_mean`` existed gets it from its trigger."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(results, kinds, paper)
    if test_images is not None:
        from ..metrics import mean_linf

        for r in rows:
            if r["kind"] != "clean" and r.get("linf_mean") is None and r["attack"] in marks:
                r["linf_mean"] = mean_linf(test_images, marks[r["attack"]])
    md = markdown_table(rows, paper_name)
    size = next((r["lpips_image_size"] for r in rows if r.get("lpips_image_size")), None)
    extra = [f"\nLPIPS: AlexNet v0.1 at the images' own size ({size[0]}×{size[1]})." if size else "",
             f"Data: {results.get('data')}, {results.get('train_images')} training / {results.get('test_images')} "
             f"test images; command: `{results.get('command')}`"
             + ("; the rows were made by several runs of this config (each row's own command is in table.json)."
                if len({r.get("command") for r in rows if r.get("command")} | {results.get("command")}) > 1
                else ".")]
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(md + "\n" + "\n".join(e for e in extra if e) + "\n")
    with atomic_path(out / "table.csv") as tmp:
        tmp.write_text(csv_table(rows))
    write_json(out / "table.json", rows)
    if marks and test_image is not None:
        labels = {name: LABELS.get(kinds.get(name, name), name) for name in marks}
        figure2(marks, test_image, out / "figure2.png", labels)
    return rows
