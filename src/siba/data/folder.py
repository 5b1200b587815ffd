"""Image-folder trees (one sub-folder per class), as a directory or a ``.tar.gz`` of one.

Images are decoded once (Pillow), resized to the asked size, and cached as a
safetensors file keyed by the source's listing, so a second load takes a fraction of a
second. Archives are read member by member in memory: nothing is written outside the
cache, and a member whose name would escape the archive's root (absolute, ``..``, a
link or device) is refused. :func:`safe_extract` does the same checks when a tree must
be extracted to disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import numpy as np
import torch

from ..errors import SibaError
from ..runtime import cache_dir, load_tensors, save_tensors
from .dataset import ImageSet

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
_CACHE_VERSION = 1


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (name.endswith((".tar.gz", ".tgz", ".tar")))


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")) or ":" in (p.parts[0] if p.parts else ""):
        raise SibaError(f"unsafe archive entry {name!r} in {archive}: it would be written outside the data folder")
    return p


def safe_members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    """Regular files and folders of ``tar``, refusing any entry that could escape its root."""
    for member in tar:
        _check_member_name(member.name, archive)
        if member.issym() or member.islnk():
            raise SibaError(f"unsafe archive entry {member.name!r} in {archive}: links are not accepted")
        if member.isdev() or member.isfifo():
            raise SibaError(f"unsafe archive entry {member.name!r} in {archive}: special files are not accepted")
        yield member


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` into ``dest``, refusing path traversal, links and special files."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with tarfile.open(archive) as tar:
        for member in safe_members(tar, archive):
            target = (root / member.name).resolve()
            if root != target and root not in target.parents:
                raise SibaError(f"unsafe archive entry {member.name!r} in {archive}")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                with open(target, "wb") as out:
                    out.write(src.read())
    return dest


# --------------------------------------------------------------------------- listing


def _class_layout(paths: list[PurePosixPath], source: Path) -> tuple[list[str], list[tuple[PurePosixPath, str, str]]]:
    """Map image paths to class names: the folder right below the tree's root.

    A single top folder shared by every image (``train/<class>/x.jpg``) is the root.
    """
    if not paths:
        raise SibaError(f"no images found in {source}")
    parts = [p.parts for p in paths]
    while all(len(pp) >= 3 for pp in parts) and len({pp[0] for pp in parts}) == 1:
        parts = [pp[1:] for pp in parts]
    loose = [PurePosixPath(*pp) for pp in parts if len(pp) < 2]
    if loose:
        raise SibaError(f"{source}: image {loose[0]} is not inside a class folder "
                        "(expected one sub-folder per class)")
    classes = sorted({pp[0] for pp in parts})
    return classes, [(p, pp[0], "/".join(pp)) for p, pp in zip(paths, parts)]


def _decode(data: bytes, where: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise SibaError(f"corrupt image {where}: {exc}") from None


def _iter_files_dir(root: Path) -> tuple[list[PurePosixPath], dict[PurePosixPath, Path], list[str]]:
    images, skipped = [], []
    where: dict[PurePosixPath, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            full = Path(dirpath) / fn
            rel = PurePosixPath(full.relative_to(root).as_posix())
            if fn.startswith(".") or full.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append(str(rel))
                continue
            images.append(rel)
            where[rel] = full
    return images, where, skipped


def _listing_key(entries: Iterable[tuple[str, int, int]], size: tuple[int, int] | None, source: Path) -> str:
    h = hashlib.sha256()
    h.update(f"v{_CACHE_VERSION}|{source.resolve()}|{size}".encode())
    for name, nbytes, mtime in entries:
        h.update(f"|{name}:{nbytes}:{mtime}".encode())
    return h.hexdigest()[:32]


def load_image_folder(
    path: str | os.PathLike,
    size: int | tuple[int, int] | None = None,
    *,
    name: str | None = None,
    cache: bool = True,
    progress: bool | None = False,
) -> ImageSet:
    """Load an image-folder tree (directory or ``.tar.gz``) into an :class:`ImageSet`.

    ``size`` (an int or ``(H, W)``) resizes every image; without it all images must
    have the same size. Files that are not images are skipped; a corrupt image raises a
    :class:`SibaError` naming it. ``ids`` of the result are the image paths relative to
    the tree's root, ``<class>/<file>``. ``progress=None`` shows a bar on a terminal only.
    """
    source = Path(path)
    if not source.exists():
        raise SibaError(f"data path does not exist: {source}")
    if isinstance(size, int):
        size = (size, size)
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise SibaError(f"image size must be positive, got {size}")

    if source.is_dir():
        rels, where, skipped = _iter_files_dir(source)
        stats = [(str(r), where[r].stat().st_size, where[r].stat().st_mtime_ns) for r in rels]
        read = lambda rel: where[rel].read_bytes()  # noqa: E731
    elif is_archive(source):
        st = source.stat()
        stats = [(str(source), st.st_size, st.st_mtime_ns)]
    else:
        raise SibaError(f"{source} is neither a folder nor a .tar.gz archive of images")

    cache_file = cache_dir() / "folders" / f"{_listing_key(stats, size, source)}.safetensors"
    if cache and cache_file.is_file():
        try:
            tensors, meta = load_tensors(cache_file)
            _warn_skipped(source, meta.get("skipped", []))
            return ImageSet(tensors["images"], tensors["labels"], meta["classes"], name or source.name, meta["ids"])
        except (SibaError, KeyError):
            pass  # a damaged cache entry is rebuilt below

    if not source.is_dir():
        # Read members in archive order: seeking backwards in a gzip stream decompresses
        # it again from the start, which makes out-of-order reads quadratic.
        blobs: dict[PurePosixPath, bytes] = {}
        skipped = []
        try:
            with tarfile.open(source) as tar:
                for m in safe_members(tar, source):
                    if not m.isfile():
                        continue
                    rel = PurePosixPath(m.name)
                    if rel.name.startswith(".") or rel.suffix.lower() not in IMAGE_EXTENSIONS:
                        skipped.append(m.name)
                        continue
                    blobs[rel] = tar.extractfile(m).read()  # type: ignore[union-attr]
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SibaError(f"{source} is not a readable archive: {exc}") from None
        rels = sorted(blobs)
        read = blobs.__getitem__

    classes, layout = _class_layout(rels, source)
    class_index = {c: i for i, c in enumerate(classes)}
    arrays, labels, ids = [], [], []
    it: Iterable = layout
    if progress or (progress is None and sys.stderr.isatty()):
        from tqdm import tqdm

        it = tqdm(layout, desc=f"decoding {source.name}", unit="img", leave=False)
    for rel, cls, rel_id in it:
        arr = _decode(read(rel), f"{source}/{rel}" if source.is_dir() else f"{source}:{rel}", size)
        if arrays and arr.shape != arrays[0].shape:
            raise SibaError(f"{source}: image {rel} is {arr.shape[1]}×{arr.shape[0]}, others "
                            f"{arrays[0].shape[1]}×{arrays[0].shape[0]}; pass a size to resize them")
        arrays.append(arr)
        labels.append(class_index[cls])
        ids.append(rel_id)
    _warn_skipped(source, skipped)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    result = ImageSet(images, torch.tensor(labels), classes, name or source.name, ids)
    if cache:
        try:
            save_tensors(cache_file, {"images": result.images, "labels": result.labels},
                         {"classes": classes, "ids": ids, "source": str(source), "skipped": skipped[:20]})
        except OSError as exc:  # a read-only cache is not fatal
            warnings.warn(f"could not write the data cache {cache_file}: {exc}", stacklevel=2)
    return result


def _warn_skipped(source: Path, skipped: list[str]) -> None:
    if skipped:
        warnings.warn(f"{source}: skipped file(s) that are not images, e.g. {skipped[0]}", stacklevel=3)


def find_split(root: Path, split: str) -> Path | None:
    """``root/split`` as a folder or ``root/split.tar.gz`` / ``.tgz`` / ``.tar``, if present."""
    for cand in (root / split, root / f"{split}.tar.gz", root / f"{split}.tgz", root / f"{split}.tar"):
        if cand.exists():
            return cand
    return None

