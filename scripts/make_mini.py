"""Build the shipped CIFAR-10 subset from the JPEG archives of ../shared/datasets/cifar10-jpeg.

    python scripts/make_mini.py ../shared/datasets/cifar10-jpeg --train-per-class 500 --test-per-class 100

Copies the original JPEG files (no re-encoding) of a seeded random choice of images
per class into src/siba/data/assets/cifar10-mini-{train,test}.tar.gz.
"""

import argparse
import io
import random
import tarfile
from pathlib import Path


def subset(src: Path, dst: Path, split: str, per_class: int, seed: int) -> None:
    with tarfile.open(src) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")]
        by_class: dict[str, list[tarfile.TarInfo]] = {}
        for m in members:
            by_class.setdefault(m.name.split("/")[-2], []).append(m)
        rng = random.Random(seed)
        with tarfile.open(dst, "w:gz", compresslevel=9) as out:
            for cls in sorted(by_class):
                names = sorted(by_class[cls], key=lambda m: m.name)
                chosen = sorted(rng.sample(names, per_class), key=lambda m: m.name)
                for m in chosen:
                    data = tar.extractfile(m).read()
                    info = tarfile.TarInfo(f"{split}/{cls}/{m.name.split('/')[-1]}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    out.addfile(info, io.BytesIO(data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="folder holding train.tar.gz and test.tar.gz")
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/siba/data/assets")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    subset(a.source / "train.tar.gz", a.out / "cifar10-mini-train.tar.gz", "train", a.train_per_class, a.seed)
    subset(a.source / "test.tar.gz", a.out / "cifar10-mini-test.tar.gz", "test", a.test_per_class, a.seed + 1)
    for f in sorted(a.out.glob("cifar10-mini-*.tar.gz")):
        print(f, f.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
