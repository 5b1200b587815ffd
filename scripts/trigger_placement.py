"""Where do a run's sparse triggers put their pixels, and on what kind of image content?

    python scripts/trigger_placement.py RUN_DIR [--data PATH] [--images 2000] [--out FILE.json]
                                        [--victim NAME ...] [--bins 4]

For every additive trigger under RUN_DIR/triggers/ (SIBA, Sparse, Random, TUAP; BadNets' patch
and Blended are left out), measured on the first ``--images`` test images:

- ``in_border``: share of the mask's pixels within 4 pixels of the image border (a mask drawn
  uniformly at random has 1 - ((H-8)(W-8))/(HW), 44% on 32×32);
- ``dist_from_centre``: mean distance of the mask's pixels from the image centre, in pixels;
- ``local_contrast``: mean |pixel - its 3×3 neighbourhood mean| at the mask's pixels, averaged
  over the images and channels (how much the image content itself varies where the trigger is);
- ``adjacent_pairs``: pairs of 4-neighbouring mask pixels (how clustered the mask is).

The row ``uniform`` gives the same figures over all pixels, the value a random mask has on average.
``contrast_by_class`` is ``local_contrast`` over each class's test images.

``--victim NAME`` (a folder under RUN_DIR/victims, e.g. ``siba-r0.05``; repeatable) asks whether
that victim obeys its trigger less on images whose own content varies more where the trigger is:
the non-target test images (all of them) are split into ``--bins`` equal groups by their local
contrast under the mask, and ``asr_by_contrast`` gives each group's contrast range and ASR.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siba.attacks import AdditiveTrigger, load_trigger  # noqa: E402
from siba.data import load_dataset  # noqa: E402
from siba.runtime import setup_threads  # noqa: E402


def placement(mask: torch.Tensor, contrast: torch.Tensor, border: int = 4) -> dict[str, float]:
    """The figures above for one H×W mask (non-zero = changed) and an H×W local-contrast map."""
    H, W = mask.shape
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    near_border = (yy < border) | (yy >= H - border) | (xx < border) | (xx >= W - border)
    dist = ((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2).sqrt()
    sel = mask != 0
    m = sel.float()
    return {"pixels": int(sel.sum()), "in_border": float(near_border[sel].float().mean()),
            "dist_from_centre": float(dist[sel].mean()), "local_contrast": float(contrast[sel].mean()),
            "adjacent_pairs": int((m[1:] * m[:-1]).sum() + (m[:, 1:] * m[:, :-1]).sum())}


def local_contrast(images: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """H×W map of |x - 3×3 mean of x|, averaged over images (N×C×H×W in [0, 1]) and channels
    (``per_image``: one N×H×W map per image, averaged over channels only)."""
    C = images.shape[1]
    mean = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), torch.ones(C, 1, 3, 3) / 9, groups=C)
    maps = (images - mean).abs().mean(dim=1)
    return maps if per_image else maps.mean(dim=0)


def contrast_under(per_image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One value per image: its N×H×W local-contrast map averaged over the mask's (non-zero) pixels."""
    return per_image[:, mask != 0].mean(dim=1)


def asr_by_contrast(success: torch.Tensor, contrast: torch.Tensor, bins: int = 4) -> list[dict[str, float]]:
    """Split images into ``bins`` equal groups by ``contrast`` (one value each, ascending groups)
    and give each group's contrast range, size and share of ``success`` (bool, one per image)."""
    order = contrast.argsort()
    rows = []
    for part in order.tensor_split(bins):
        c = contrast[part]
        rows.append({"contrast_from": float(c.min()), "contrast_to": float(c.max()), "images": int(part.numel()),
                     "asr": float(success[part].float().mean())})
    return rows


def victim_contrast(run: Path, name: str, test, per_image: torch.Tensor, bins: int) -> dict:
    """``asr_by_contrast`` of the victim RUN/victims/NAME on the test set under its own trigger."""
    from siba.models import load_model
    from siba.training import predict

    attack = name.rsplit("-r", 1)[0]
    mark = load_trigger(run / "triggers" / attack / "trigger.safetensors")
    if not isinstance(mark, AdditiveTrigger):
        raise SystemExit(f"--victim {name}: its trigger ({attack}) has no sparse mask to measure contrast under")
    model = load_model(run / "victims" / name / "model.safetensors", expect_classes=test.num_classes)
    keep = mark.rule.eligible(test.labels)
    pred = predict(model, mark.apply(test.images[keep].float() / 255))
    success = pred.cpu() == mark.targets(test.labels[keep])
    under = contrast_under(per_image[keep], mark.mask)
    return {"trigger": attack, "asr": float(success.float().mean()), "asr_by_contrast": asr_by_contrast(
        success, under, bins)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a `siba run` folder with triggers/<attack>/trigger.safetensors")
    ap.add_argument("--data", default=None, help="the run's data set (default: the one in RUN/config.json)")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--victim", action="append", default=[], help="a victim folder name, e.g. siba-r0.05")
    ap.add_argument("--bins", type=int, default=4, help="contrast groups for --victim (default 4: quartiles)")
    a = ap.parse_args()
    for name in a.victim:
        if not (a.run / "victims" / name / "model.safetensors").is_file():
            ap.error(f"--victim {name}: no trained model at {a.run / 'victims' / name / 'model.safetensors'}")
    if a.bins < 1:
        ap.error("--bins must be at least 1")
    setup_threads()
    data_spec = a.data or json.loads((a.run / "config.json").read_text())["config"]["data"]
    test = load_dataset(data_spec).test
    per_image = local_contrast(test.images.float() / 255, per_image=True)
    contrast = per_image[:a.images].mean(dim=0)
    rows = {}
    for path in sorted((a.run / "triggers").glob("*/trigger.safetensors")):
        mark = load_trigger(path)
        if isinstance(mark, AdditiveTrigger):
            rows[path.parent.name] = placement(mark.mask, contrast)
            under = contrast_under(per_image, mark.mask)
            rows[path.parent.name]["contrast_by_class"] = {
                test.classes[c]: float(under[test.labels == c].mean()) for c in range(test.num_classes)}
    rows["uniform"] = placement(torch.ones_like(contrast), contrast)
    print(f"{'trigger':10s} {'pixels':>6s} {'in border':>9s} {'from centre':>11s} {'contrast':>8s} {'adjacent':>8s}")
    for name, r in rows.items():
        print(f"{name:10s} {r['pixels']:6d} {100 * r['in_border']:8.0f}% {r['dist_from_centre']:11.1f} "
              f"{r['local_contrast']:8.4f} {r['adjacent_pairs']:8d}")
    victims = {}
    for name in a.victim:
        victims[name] = v = victim_contrast(a.run, name, test, per_image, a.bins)
        groups = "  ".join(f"{g['contrast_from']:.3f}-{g['contrast_to']:.3f}: {100 * g['asr']:.1f}%"
                           for g in v["asr_by_contrast"])
        print(f"{name}: ASR {100 * v['asr']:.2f}%; by contrast under the mask  {groups}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"run": str(a.run), "data": str(data_spec), "images": a.images,
                                     "command": "python " + " ".join(sys.argv), "triggers": rows,
                                     "victims": victims}, indent=2) + "\n")


if __name__ == "__main__":
    main()
