"""LPIPS of Blended's noise pattern on sharp and on upsampled images: why Table II's stand-in scores high.

    python scripts/lpips_blend_resolution.py [--data data/rot20-mini-128] [--out results/lpips_blend_resolution.json]

Blended with seeded uniform noise at opacity 0.2 (Table II's setting) is applied to
- the colour photographs bundled with scikit-image (the test extra; nothing is downloaded), cut to
  their central square and area-downscaled to 128×128: sharp natural images, like the paper's faces;
- the shipped CIFAR-10 subset at 32×32 (Table I's resolution);
- the same subset upsampled ×4 to 128×128 (bicubic): smooth images of Table II's size, what
  ``scripts/make_rot20.py`` builds;
- with ``--data``, the test images of an image-folder set (e.g. the make_rot20 stand-in itself),
and siba's LPIPS (AlexNet, v0.1; inputs in [0, 1], scaled to [-1, 1] inside) is averaged over each.
Prints one line per set and writes the JSON (with the command and the machine).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from siba.attacks.blended import Blended  # noqa: E402
from siba.data import load_dataset  # noqa: E402
from siba.errors import SibaError  # noqa: E402
from siba.metrics.lpips import default_lpips  # noqa: E402
from siba.runtime import machine_info, setup_threads  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "cat")
ALPHA = 0.2


def photographs(size: int) -> tuple[torch.Tensor, list[str]]:
    try:
        import skimage.data
    except ImportError:
        raise SibaError("this script needs scikit-image (pip install 'siba[test]')") from None
    images, names = [], []
    for name in PHOTOS:
        load = getattr(skimage.data, name, None)  # a photograph this scikit-image lacks is left out
        a = load() if load is not None else None
        if a is None or a.ndim != 3:
            continue
        t = torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1).float()[None] / 255
        side = min(t.shape[-2:])
        top, left = (t.shape[-2] - side) // 2, (t.shape[-1] - side) // 2
        images.append(F.interpolate(t[..., top:top + side, left:left + side], size=(size, size), mode="area"))
        names.append(name)
    return torch.cat(images), names


@torch.no_grad()
def blended_lpips(lpips: torch.nn.Module, x: torch.Tensor) -> float:
    pattern = Blended(pattern="noise", alpha=ALPHA).make_pattern(tuple(x.shape[1:]))
    return float(lpips(x, (1 - ALPHA) * x + ALPHA * pattern).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="also an image-folder set at 128×128 (its first --count test images)")
    ap.add_argument("--count", type=int, default=256, help="images of each data set (default 256)")
    ap.add_argument("--out", default="results/lpips_blend_resolution.json")
    args = ap.parse_args(argv)
    try:
        setup_threads()
        lpips = default_lpips(torch.device("cpu"))
        photos, names = photographs(128)
        mini = load_dataset("cifar10-mini", progress=False).test.images[:args.count].float() / 255
        sets = {  # key: (what, images)
            "photographs": (f"scikit-image photographs at 128×128 ({', '.join(names)})", photos),
            "cifar10-mini": ("shipped CIFAR-10 subset at 32×32", mini),
            "cifar10-mini-x4": ("shipped CIFAR-10 subset upsampled ×4 to 128×128 (bicubic)",
                                F.interpolate(mini, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)),
        }
        if args.data:
            sets["data"] = (f"{args.data} (test images)",
                            load_dataset(args.data, progress=False).test.images[:args.count].float() / 255)
        rows = []
        for key, (name, x) in sets.items():
            value = blended_lpips(lpips, x)
            rows.append({"set": key, "images": name, "count": len(x), "size": list(x.shape[1:]),
                         "lpips": round(value, 4)})
            print(f"{name}: {len(x)} images, LPIPS of Blended noise at alpha {ALPHA}: {value:.3f}")
    except SibaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "what": f"LPIPS (siba's AlexNet v0.1) between images and Blended(noise, alpha {ALPHA}) of them",
        "rows": rows, "machine": machine_info("cpu"),
        "command": "python scripts/lpips_blend_resolution.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
