"""CIFAR-10 in its official python format (``cifar-10-python.tar.gz``).

The batches are pickles. They are read with :class:`RestrictedUnpickler`, which
accepts only what the format holds (a dict of lists, bytes and one numpy uint8
array), so a tampered file cannot run code. The archive is checked against its
official MD5 and read in memory (nothing is extracted).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SibaError
from ..runtime import atomic_path, cache_dir
from .dataset import DataSplits, ImageSet

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
# Official per-file checksums, for an already extracted cifar-10-batches-py/.
CIFAR10_FILES_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, dtypes and plain containers.

    Any other global (``os.system``, ``builtins.eval``, ...) is refused with
    :class:`pickle.UnpicklingError` before it can be called.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles; latin-1 only, below
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        if name == "encode":
            return _latin1_encode
        return getattr(np, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError("only latin-1 byte strings may be rebuilt in a CIFAR batch")
    return text.encode("latin1")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` allowing only what a CIFAR batch may contain."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _parse_batch(data: bytes, where: str) -> tuple[np.ndarray, list[int]]:
    try:
        entry = restricted_loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise SibaError(f"refusing to load {where}: {exc}") from None
    if not isinstance(entry, dict) or "data" not in entry or "labels" not in entry:
        raise SibaError(f"{where} is not a CIFAR-10 batch (no 'data'/'labels')")
    arr, labels = entry["data"], entry["labels"]
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != 3072:
        raise SibaError(f"{where}: 'data' is not a uint8 N×3072 array")
    if not isinstance(labels, list) or len(labels) != arr.shape[0] or not all(isinstance(v, int) for v in labels):
        raise SibaError(f"{where}: 'labels' is not a list of {arr.shape[0]} integers")
    return arr, labels


def _to_set(parts: list[tuple[np.ndarray, list[int]]], name: str) -> ImageSet:
    arr = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = [v for p in parts for v in p[1]]
    return ImageSet(torch.from_numpy(arr.copy()), torch.tensor(labels), list(CIFAR10_CLASSES), name)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_cifar10(dest: Path) -> Path:
    """Download the official archive to ``dest`` (atomically) and check its MD5."""
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=60) as resp, atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            if md5sum(tmp) != CIFAR10_ARCHIVE_MD5:
                raise SibaError(f"downloaded {CIFAR10_URL} but its MD5 is wrong; try again")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise SibaError(
            f"CIFAR-10 is not at {dest} and could not be downloaded ({exc}); "
            f"put {CIFAR10_ARCHIVE} (from {CIFAR10_URL}) there or pass --data PATH") from None
    return dest


def load_cifar10(root: str | os.PathLike | None = None, *, download: bool = True, verify: bool = True) -> DataSplits:
    """Load CIFAR-10 from ``root``: the archive, a folder holding it, or ``cifar-10-batches-py/``.

    Without ``root`` the cache folder (``SIBA_CACHE`` or ``~/.cache/siba``) ``/cifar10`` is
    used, and the archive is downloaded there when missing and ``download`` is true.
    """
    root = Path(root) if root is not None else cache_dir() / "cifar10"
    archive: Path | None = None
    folder: Path | None = None
    if root.is_file():
        archive = root
    elif (root / CIFAR10_FOLDER).is_dir() and (root / CIFAR10_FOLDER / "test_batch").exists():
        folder = root / CIFAR10_FOLDER
    elif root.is_dir() and (root / "test_batch").exists():
        folder = root
    elif (root / CIFAR10_ARCHIVE).is_file():
        archive = root / CIFAR10_ARCHIVE
    elif download:
        archive = download_cifar10(root / CIFAR10_ARCHIVE)
    else:
        raise SibaError(f"CIFAR-10 not found: expected {root / CIFAR10_ARCHIVE} or {root / CIFAR10_FOLDER}/")

    blobs: dict[str, bytes] = {}
    if archive is not None:
        if verify and md5sum(archive) != CIFAR10_ARCHIVE_MD5:
            raise SibaError(f"{archive} does not have the official CIFAR-10 MD5 {CIFAR10_ARCHIVE_MD5}")
        try:
            with tarfile.open(archive) as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in CIFAR10_FILES_MD5:
                        blobs[base] = tar.extractfile(member).read()  # type: ignore[union-attr]
        except tarfile.TarError as exc:
            raise SibaError(f"{archive} is not a readable tar archive: {exc}") from None
    else:
        assert folder is not None
        for name in CIFAR10_FILES_MD5:
            path = folder / name
            if not path.is_file():
                raise SibaError(f"CIFAR-10 batch missing: {path}")
            blobs[name] = path.read_bytes()
            if verify and hashlib.md5(blobs[name]).hexdigest() != CIFAR10_FILES_MD5[name]:
                raise SibaError(f"{path} does not have the official CIFAR-10 MD5")
    missing = [n for n in CIFAR10_FILES_MD5 if n not in blobs]
    if missing:
        raise SibaError(f"CIFAR-10 archive {archive or folder} lacks {', '.join(missing)}")
    train = _to_set([_parse_batch(blobs[n], n) for n in TRAIN_BATCHES], "cifar10-train")
    test = _to_set([_parse_batch(blobs[n], n) for n in TEST_BATCHES], "cifar10-test")
    return DataSplits(train, test, "cifar10")
