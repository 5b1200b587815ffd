"""A 20-class image-folder set at 128×128 made from CIFAR-10: a stand-in for Table II's face subset.

    python scripts/make_rot20.py ../shared/datasets/cifar10-jpeg data/cifar10-rot20-128 \\
        [--train-per-class 400] [--test-per-class 100] [--size 128] [--seed 0]

The paper's Table II uses 20 VGGFace2 identities (400 training and 100 test images each, 128×128);
VGGFace2 cannot be had here (see docs/vggface2.md for building that subset from a copy you have).
This builds a set of the same shape so that Table II's path (20 classes, 128×128, k = 1600) runs on
real images: the classes are the source's classes upright and the same classes turned upside down
(rotated 180°, named ``<class>-rot180``), so CIFAR-10 gives 20. Each class draws its own source
images (seeded, without replacement: an image is in one class and one split only), and each is
upsampled to SIZE×SIZE with Pillow's bicubic filter and written as a PNG::

    OUT/train/<class>/0000.png …, OUT/train/<class>-rot180/0000.png …
    OUT/test/…  (the same, from the source's test split)
    OUT/manifest.json  (source, its fingerprints, settings, the source index of every file, command)

It is not a face set and its images carry no more detail than 32×32: its numbers measure siba at
Table II's resolution and class count, not the paper's face results. SRC is anything
``siba.data.load_dataset`` reads (a folder or archive pair, ``cifar10-mini``). A mistake (a
missing source, an OUT that is not empty, too few images per class) is one line and exit status 2,
with nothing written; the tree is built in ``.OUT.partial`` and renamed at the end.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FORMAT = "siba-rot20/1"


def draw(labels, classes: list[str], per_class: int, seed: int, split: str) -> list[list[int]]:
    """For each source class, ``2 × per_class`` distinct indices (upright ones, then rotated ones)."""
    import torch

    from siba.errors import SibaError

    out = []
    for c, name in enumerate(classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < 2 * per_class:
            raise SibaError(f"class {name!r} of the {split} split has {len(idx)} images; "
                            f"{2 * per_class} are needed ({per_class} upright and {per_class} rotated)")
        g = torch.Generator().manual_seed(seed * 1000 + (split == "test") * 100 + c)
        out.append(idx[torch.randperm(len(idx), generator=g)[:2 * per_class]].tolist())
    return out


def build(src: str, out: Path, train_per_class: int, test_per_class: int, size: int, seed: int,
          command: str) -> dict:
    import numpy as np
    import PIL
    from PIL import Image

    import siba
    from siba.data import load_dataset
    from siba.data.vggface2 import _write_png
    from siba.errors import SibaError

    for name, value, low in (("--train-per-class", train_per_class, 1), ("--test-per-class", test_per_class, 1),
                             ("--size", size, 8), ("--seed", seed, 0)):
        if value < low:
            raise SibaError(f"{name} must be at least {low}, got {value}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SibaError(f"{out} exists and is not an empty folder; pick another OUT or delete it")
    splits = load_dataset(src, progress=False)
    classes = list(splits.train.classes)
    plan = {split: (ds, per, draw(ds.labels, classes, per, seed, split))
            for split, ds, per in (("train", splits.train, train_per_class), ("test", splits.test, test_per_class))}
    names = classes + [f"{c}-rot180" for c in classes]
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    files: dict[str, dict[str, list[int]]] = {}
    try:
        for split, (ds, per, chosen) in plan.items():
            files[split] = {}
            for c, idx in enumerate(chosen):
                for turn, name in ((0, classes[c]), (1, names[len(classes) + c])):
                    folder = partial / split / name
                    folder.mkdir(parents=True)
                    picked = idx[turn * per:(turn + 1) * per]
                    for i, j in enumerate(picked):
                        arr = ds.images[j].permute(1, 2, 0).numpy()
                        if turn:
                            arr = np.ascontiguousarray(arr[::-1, ::-1])
                        img = Image.fromarray(arr, "RGB").resize((size, size), Image.BICUBIC)
                        _write_png(folder / f"{i:04d}.png", np.asarray(img))
                    files[split][name] = picked
        manifest = {
            "format": FORMAT, "source": str(src), "source_classes": classes,
            "source_fingerprints": {"train": splits.train.fingerprint(), "test": splits.test.fingerprint()},
            "classes": sorted(names), "train_per_class": train_per_class, "test_per_class": test_per_class,
            "size": size, "seed": seed,
            "rule": "class c: source class c upright; class c-rot180: other images of source class c rotated "
                    "180°; each image upsampled with Pillow bicubic to SIZE×SIZE; PNG",
            "source_index": files, "command": command, "siba": siba.__version__, "pillow": PIL.__version__,
        }
        from siba.runtime import write_json

        write_json(partial / "manifest.json", manifest)
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def main(argv: list[str] | None = None) -> int:
    from siba.errors import SibaError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="the source data set (e.g. ../shared/datasets/cifar10-jpeg)")
    ap.add_argument("out", help="the folder to write (must not exist, or be empty)")
    ap.add_argument("--train-per-class", type=int, default=400)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = "python scripts/make_rot20.py " + shlex.join(argv)
    try:
        m = build(args.src, Path(args.out), args.train_per_class, args.test_per_class, args.size, args.seed,
                  command)
    except SibaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(m["classes"])
    print(f"wrote {args.out}: {n} classes, {n * args.train_per_class} training and {n * args.test_per_class} "
          f"test images at {args.size}×{args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
