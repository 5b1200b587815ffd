"""Data sets: loading (CIFAR-10, image folders, the shipped subset) and device batches.

``load_dataset(spec)`` understands:

- ``cifar10-mini`` — the small real CIFAR-10 subset shipped with the package (default);
- ``cifar10`` — the official CIFAR-10 (downloaded to the cache when online);
- a path to ``cifar-10-python.tar.gz`` or to ``cifar-10-batches-py/``;
- a path to a folder holding ``train`` and ``test`` image-folder trees, each a folder or a
  ``.tar.gz`` (for instance ``../shared/datasets/cifar10-jpeg`` or an exported poisoned set).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import SibaError
from .cifar import CIFAR10_CLASSES, RestrictedUnpickler, load_cifar10, restricted_loads
from .dataset import DataSplits, ImageSet
from .folder import find_split, load_image_folder, safe_extract
from .loader import DeviceLoader, random_crop_flip

BUILTIN = {
    "cifar10-mini": "the CIFAR-10 subset shipped with siba (500 train / 100 test images per class, JPEG)",
    "cifar10": "the official CIFAR-10 (cifar-10-python.tar.gz), downloaded to the cache when missing",
}
DEFAULT_DATASET = "cifar10-mini"


def _assets() -> Path:
    return Path(str(resources.files("siba.data") / "assets"))


def load_mini(size: int | tuple[int, int] | None = None) -> DataSplits:
    """The shipped CIFAR-10 subset (real images from the JPEG copy of CIFAR-10)."""
    assets = _assets()
    train = load_image_folder(assets / "cifar10-mini-train.tar.gz", size, name="cifar10-mini-train")
    test = load_image_folder(assets / "cifar10-mini-test.tar.gz", size, name="cifar10-mini-test")
    return DataSplits(train, test, "cifar10-mini")


def load_dataset(spec: str | os.PathLike = DEFAULT_DATASET, size: int | tuple[int, int] | None = None,
                 *, progress: bool | None = False) -> DataSplits:
    """Load a data set by name or path (see the module's docstring); returns train and test."""
    spec_s = str(spec)
    if spec_s == "cifar10-mini":
        splits = load_mini(size)
    elif spec_s == "cifar10":
        splits = load_cifar10()
    else:
        path = Path(spec_s).expanduser()
        if not path.exists():
            known = ", ".join(BUILTIN)
            raise SibaError(f"unknown data set {spec_s!r}: not one of {known}, and no such path")
        name = path.name.lower()
        if name.endswith((".tar.gz", ".tgz")) and "cifar-10-python" in name or name == "cifar-10-batches-py" \
                or (path / "cifar-10-batches-py").is_dir() or (path / "cifar-10-python.tar.gz").is_file() \
                or (path / "test_batch").is_file():
            splits = load_cifar10(path, download=False)
        elif path.is_dir():
            train, test = find_split(path, "train"), find_split(path, "test")
            if train is None or test is None:
                raise SibaError(f"{path} holds no train/ and test/ image folders (or train.tar.gz and test.tar.gz)")
            splits = DataSplits(load_image_folder(train, size, name=f"{path.name}-train", progress=progress),
                                load_image_folder(test, size, name=f"{path.name}-test", progress=progress),
                                path.name)
        else:
            raise SibaError(f"{path} is not a data set: give a folder with train/ and test/, "
                            "or a CIFAR-10 archive")
    if size is not None:
        want = (size, size) if isinstance(size, int) else tuple(size)
        if splits.image_shape[1:] != want:
            raise SibaError(f"data set {spec_s} has {splits.image_shape[1]}×{splits.image_shape[2]} images, "
                            f"not {want[0]}×{want[1]}")
    return splits


__all__ = [
    "BUILTIN", "CIFAR10_CLASSES", "DEFAULT_DATASET", "DataSplits", "DeviceLoader", "ImageSet",
    "RestrictedUnpickler", "find_split", "load_cifar10", "load_dataset", "load_image_folder", "load_mini",
    "random_crop_flip", "restricted_loads", "safe_extract",
]
