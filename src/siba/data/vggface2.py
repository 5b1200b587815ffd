"""The paper's VGGFace2 subset (Table II), built from a copy of VGGFace2 that the user provides.

siba downloads nothing here: VGGFace2 is licensed to its users, who obtain it themselves.
:func:`build_vggface2_subset` turns that copy into the subset the paper uses (20 identities,
400 training and 100 test images each, 128×128) as an image-folder data set that
:func:`siba.data.load_dataset` reads::

    OUT/train/<identity>/<index>.png
    OUT/test/<identity>/<index>.png
    OUT/manifest.json

Rules (see docs/vggface2.md):

- **Source layout.** ``src`` is either a folder of identity folders (``n000002/0001_01.jpg`` …)
  or a folder holding ``train/`` (VGGFace2 as shipped, with ``train/`` and ``test/``); in the
  second case identities are drawn from ``train/`` only (VGGFace2's test identities are other
  people; to draw from them, pass ``SRC/test`` itself). An identity's images are the files with
  an image extension directly inside its folder; hidden files and folders are ignored.
- **Choice.** An identity is eligible when its folder holds at least ``train_per_class +
  test_per_class`` image files. The eligible identities (sorted by name) are shuffled with the
  seed and taken in that order; each taken identity's files (sorted by name) are shuffled with a
  stream of the seed and the identity's name, so its draw does not depend on the others. The
  first ``train_per_class`` readable files go to ``train/``, the next ``test_per_class`` to
  ``test/``: the two are disjoint.
- **Unreadable images are skipped**, not fatal: a file Pillow cannot decode is passed over and
  the next file of the identity's shuffled order takes its place; an identity left with too few
  readable images is passed over for the next identity of the shuffled order. Both are listed in
  the manifest (``skipped_files``, ``skipped_identities``) and reported in one warning. The build
  fails only when too few identities remain.
- **Resize.** Each image is converted to RGB, center-cropped to the largest square (offsets
  rounded down), then resized to ``size``×``size`` with Pillow's **bicubic** filter (which, like
  every Pillow filter but nearest, widens its support when it shrinks, so it antialiases). It is
  written as a PNG (lossless, no metadata, zlib level 6), so the same source, seed and settings
  give byte-identical files with the same Pillow build.
- **Nothing half-written.** Everything is checked before a file is written, the tree is built in a
  hidden sibling folder ``.OUT.partial`` and renamed to ``OUT`` at the end; a failed or
  interrupted build leaves no ``OUT`` (and removes the parent folders it made).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SibaError
from .folder import IMAGE_EXTENSIONS

MANIFEST_FORMAT = "siba-vggface2-subset/1"
RESIZE_RULE = ("RGB; center crop to the largest square (offsets rounded down); "
               "Pillow bicubic resize to SIZE×SIZE; PNG (zlib level 6, no metadata)")
_PNG_LEVEL = 6


def _identity_root(src: Path) -> tuple[Path, str]:
    """The folder whose sub-folders are identities, and how ``src`` was read."""
    if (src / "train").is_dir():
        return src / "train", "train/ of a VGGFace2 copy (test/ is not used)"
    return src, "a folder of identity folders"


def _list_identities(root: Path) -> dict[str, list[str]]:
    """``{identity: [image file names, sorted]}`` for every non-hidden sub-folder of ``root``."""
    identities: dict[str, list[str]] = {}
    try:
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        for name in folders:
            identities[name] = sorted(
                e.name for e in os.scandir(root / name)
                if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                and e.is_file())
    except OSError as exc:
        raise SibaError(f"cannot read the source folder {root}: {exc.strerror or exc}") from None
    return identities


def _square_rgb(path: Path, size: int) -> np.ndarray | None:
    """The image at ``path`` center-cropped and resized to ``size``×``size`` RGB, or None if unreadable."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's "corrupt EXIF" notes, once per file
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)
                if s <= 0:
                    return None
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)
                return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def _write_png(path: Path, arr: np.ndarray) -> str:
    """Write ``arr`` (H×W×3 uint8) as a PNG without metadata; returns the file's SHA-256."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=_PNG_LEVEL)
    data = buf.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _identity_seed(seed: int, name: str) -> list[int]:
    return [seed, 1, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")]


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _check_settings(identities: Any, train_per_class: Any, test_per_class: Any, size: Any, seed: Any) -> None:
    from ..runtime import check_seed

    for what, v in (("identities", identities), ("train_per_class", train_per_class),
                    ("test_per_class", test_per_class), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SibaError(f"{what.replace('_', '-')} must be a whole number ≥ 1, got {v!r}")
    check_seed(seed)


def build_vggface2_subset(src: str | os.PathLike, out: str | os.PathLike, *, identities: int = 20,
                          train_per_class: int = 400, test_per_class: int = 100, size: int = 128, seed: int = 0,
                          progress: bool | None = True, command: str | None = None) -> dict[str, Any]:
    """Build the paper's VGGFace2 subset from ``src`` into ``out``; returns the manifest.

    See the module's docstring for the rules. ``progress``: a tqdm bar (None: only when stderr is a
    terminal). ``command``: the command line to record in the manifest (the CLI passes its own).
    Raises :class:`SibaError` (nothing written) for a missing source, too few eligible identities,
    an ``out`` that exists and is not an empty folder, or a setting that is not a whole number ≥ 1.
    """
    from .. import __version__

    _check_settings(identities, train_per_class, test_per_class, size, seed)
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.exists():
        raise SibaError(f"VGGFace2 source folder not found: {src}")
    if not src.is_dir():
        raise SibaError(f"{src} is not a folder: give the VGGFace2 folder (with train/) "
                        "or a folder of identity folders")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SibaError(f"{out} exists and is not empty; choose another output folder or delete it")

    root, layout = _identity_root(src)
    listing = _list_identities(root)
    need = train_per_class + test_per_class
    eligible = [name for name, files in listing.items() if len(files) >= need]
    if len(eligible) < identities:
        raise SibaError(f"only {len(eligible)} of the {len(listing)} identities in {root} have at least {need} "
                        f"images ({train_per_class} train + {test_per_class} test), {identities} asked for; "
                        "lower --identities or the per-class counts")

    from PIL import __version__ as pillow_version

    tmp = Path(os.path.abspath(out))
    tmp = tmp.with_name(f".{tmp.name}.partial")
    new_parents = _missing_folders(tmp.parent)
    emptied_out = False
    bar = None
    try:
        if tmp.exists():
            shutil.rmtree(tmp)  # what an earlier interrupted build left
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise SibaError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
        if progress or (progress is None and sys.stderr.isatty()):
            from tqdm import tqdm

            bar = tqdm(total=identities * need, desc="VGGFace2 subset", unit="img", leave=False)

        order = [eligible[i] for i in np.random.default_rng([seed, 0]).permutation(len(eligible))]
        rel_root = root.relative_to(src).as_posix()
        chosen: list[str] = []
        files: dict[str, dict[str, str]] = {}
        skipped_files: list[str] = []
        skipped_identities: list[str] = []
        width = max(4, len(str(max(train_per_class, test_per_class) - 1)))
        for name in order:
            if len(chosen) == identities:
                break
            names = listing[name]
            perm = np.random.default_rng(_identity_seed(seed, name)).permutation(len(names))
            got: list[tuple[str, np.ndarray]] = []
            for i in perm:
                rel = f"{name}/{names[i]}" if rel_root == "." else f"{rel_root}/{name}/{names[i]}"
                arr = _square_rgb(root / name / names[i], size)
                if arr is None:
                    skipped_files.append(rel)
                    continue
                got.append((rel, arr))
                if bar is not None:
                    bar.update(1)
                if len(got) == need:
                    break
            if len(got) < need:
                skipped_identities.append(name)
                if bar is not None:
                    bar.n -= len(got)
                    bar.refresh()
                continue
            chosen.append(name)
            for split, part in (("train", got[:train_per_class]), ("test", got[train_per_class:])):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for k, (rel, arr) in enumerate(part):
                    written = f"{split}/{name}/{k:0{width}d}.png"
                    files[written] = {"source": rel, "sha256": _write_png(tmp / written, arr)}
        if len(chosen) < identities:
            raise SibaError(f"only {len(chosen)} identities in {root} have at least {need} readable images "
                            f"({len(skipped_files)} unreadable image(s) skipped), {identities} asked for; "
                            "lower --identities or the per-class counts")

        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "source": str(src.resolve()),
            "source_layout": layout,
            "settings": {"identities": identities, "train_per_class": train_per_class,
                         "test_per_class": test_per_class, "size": size, "seed": seed},
            "resize": RESIZE_RULE.replace("SIZE", str(size)),
            "identities": sorted(chosen),
            "identity_draw_order": chosen,
            "source_identities": len(listing),
            "eligible_identities": len(eligible),
            "skipped_files": skipped_files,
            "skipped_identities": skipped_identities,
            "files": dict(sorted(files.items())),
            "command": command,
            "siba_version": __version__,
            "pillow_version": pillow_version,
        }
        from ..runtime import write_json

        write_json(tmp / "manifest.json", manifest)
        if out.exists():
            out.rmdir()
            emptied_out = True
        tmp.rename(out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if emptied_out:
            with contextlib.suppress(OSError):
                out.mkdir(exist_ok=True)  # the empty folder that was there before
        for folder in new_parents:
            try:
                folder.rmdir()  # only while empty: never what someone else put there meanwhile
            except OSError:
                break
        if isinstance(exc, OSError):
            raise SibaError(f"could not write the VGGFace2 subset to {out}: {exc}") from None
        raise
    finally:
        if bar is not None:
            bar.close()
    if skipped_files or skipped_identities:
        warnings.warn(f"{src}: skipped {len(skipped_files)} unreadable image(s)"
                      + (f", e.g. {skipped_files[0]}" if skipped_files else "")
                      + (f", and {len(skipped_identities)} identit{'y' if len(skipped_identities) == 1 else 'ies'} "
                         "left with too few readable images" if skipped_identities else "")
                      + " (listed in manifest.json)", stacklevel=2)
    return manifest
