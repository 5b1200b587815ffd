"""Poison a training set with a trigger, and export it as real image files.

``poison_dataset`` picks ``⌊ρ·N⌋`` samples (seeded; all-to-one: none of the target class),
attaches the trigger as an 8-bit image carries it, and relabels them. The result is an
ordinary :class:`ImageSet` for any trainer. ``export_poisoned`` writes it as an
image-folder tree of lossless PNGs with a ``manifest.json``, so that any other training
pipeline can train on it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks.trigger import Trigger, trigger_paths
from ..data.dataset import ImageSet
from ..errors import SibaError
from ..runtime import file_sha256, read_json, write_json

MANIFEST_FORMAT = "siba-poisoned-set/1"


@dataclass
class PoisonedSet:
    """A poisoned training set and the record of what was poisoned."""

    data: ImageSet
    indices: torch.Tensor  # poisoned sample indices, ascending
    original_labels: torch.Tensor
    rate: float
    seed: int
    mark: Trigger
    cover_indices: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    def manifest(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "source": self.data.name,
            "classes": self.data.classes,
            "num_images": len(self.data),
            "rate": self.rate,
            "seed": self.seed,
            "target_rule": self.mark.target_rule,
            "target": self.mark.target if self.mark.target_rule == "all-to-one" else None,
            "attack": self.mark.meta.get("attack"),
            "num_poisoned": int(self.indices.numel()),
            "poisoned_indices": self.indices.tolist(),
            "original_labels": self.original_labels.tolist(),
            **({"cover_indices": self.cover_indices.tolist(),
                "cover": "noise-mode samples: transformed with a randomly perturbed trigger, labels kept"}
               if self.cover_indices.numel() else {}),
        }


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
        raise SibaError(f"poisoning rate must be in (0, 1), got {rate!r}")
    return float(rate)


def poison_count(n: int, rate: float) -> int:
    """``⌊ρ·N⌋``, computed so that 0.01·50000 is 500, not 499."""
    return int(math.floor(rate * n + 1e-9))


def select_poison_indices(labels: torch.Tensor, mark: Trigger, rate: float, seed: int) -> torch.Tensor:
    """``⌊ρ·N⌋`` seeded indices among the eligible samples (all-to-one: not of the target)."""
    rate = check_rate(rate)
    n = poison_count(len(labels), rate)
    eligible = torch.nonzero(mark.rule.eligible(labels)).flatten()
    if n == 0:
        raise SibaError(f"rate {rate:g} of {len(labels)} images poisons no sample; raise the rate")
    if n > len(eligible):
        raise SibaError(f"rate {rate:g} asks for {n} poisoned samples but only {len(eligible)} are eligible")
    g = torch.Generator().manual_seed(seed)
    return eligible[torch.randperm(len(eligible), generator=g)[:n]].sort().values


@torch.no_grad()
def poison_dataset(train_set: ImageSet, mark: Trigger, rate: float, *, seed: int = 0,
                   device: torch.device | str = "cpu", batch_size: int = 4096) -> PoisonedSet:
    """Attach ``mark`` to ``⌊rate·N⌋`` samples and relabel them; returns a new set."""
    mark.check_fits(train_set.image_shape, train_set.num_classes)
    idx = select_poison_indices(train_set.labels, mark, rate, seed)
    images = train_set.images.clone()
    labels = train_set.labels.clone()
    mark = mark.to(device)
    for i in range(0, len(idx), batch_size):
        part = idx[i:i + batch_size]
        images[part] = mark.apply_uint8(images[part].to(device)).cpu()
    original = labels[idx].clone()
    labels[idx] = mark.rule.poison_labels(original, idx).cpu()
    cover = _cover(train_set, mark, idx, images, seed)
    data = ImageSet(images, labels, list(train_set.classes), f"{train_set.name}-poisoned", train_set.ids)
    return PoisonedSet(data, idx, original, rate, seed, mark.to("cpu"), cover)


def _cover(train_set: ImageSet, mark: Trigger, idx: torch.Tensor, images: torch.Tensor, seed: int) -> torch.Tensor:
    """A trigger with cover samples (WaNet's noise mode: ``mark.cover_ratio`` per poisoned sample)
    transforms that many further samples, chosen among the unpoisoned ones, and keeps their labels;
    ``images`` is changed in place. Returns their indices (ascending; none for other triggers)."""
    ratio = float(getattr(mark, "cover_ratio", 0.0) or 0.0)
    n = min(int(math.floor(ratio * len(idx) + 1e-9)), len(train_set) - len(idx))
    if n <= 0:
        return torch.zeros(0, dtype=torch.long)
    free = torch.ones(len(train_set), dtype=torch.bool)
    free[idx] = False
    rest = torch.nonzero(free).flatten()
    g = torch.Generator().manual_seed(seed + 1)  # its own stream: the poisoned choice is the same with or without
    cover = rest[torch.randperm(len(rest), generator=g)[:n]].sort().values
    out = mark.apply_cover(images[cover].float() / 255, g)
    images[cover] = (out * 255).round_().clamp_(0, 255).to(torch.uint8).cpu()
    return cover


def _write_png(path: Path, chw: torch.Tensor) -> None:
    from PIL import Image

    arr = chw.permute(1, 2, 0).numpy()
    Image.fromarray(arr if arr.shape[2] != 1 else arr[:, :, 0]).save(path, format="PNG", compress_level=1)


def export_image_set(data: ImageSet, out_dir: str | os.PathLike, progress: bool | None = None) -> list[str]:
    """Write ``<class>/<index>.png`` for every image; returns the relative file names."""
    out = Path(out_dir)
    for c in data.classes:
        (out / c).mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(data) - 1)))
    names = []
    rng = range(len(data))
    if progress or (progress is None and sys.stderr.isatty()):
        from tqdm import tqdm

        rng = tqdm(rng, desc=f"writing {out.name}", unit="img", leave=False)
    for i in rng:
        rel = f"{data.classes[int(data.labels[i])]}/{i:0{width}d}.png"
        _write_png(out / rel, data.images[i])
        names.append(rel)
    return names


def export_poisoned(poisoned: PoisonedSet, out_dir: str | os.PathLike, *, trigger_file: str | os.PathLike | None = None,
                    test_set: ImageSet | None = None, progress: bool | None = None) -> Path:
    """Export the poisoned training set as ``train/<class>/<index>.png`` plus ``manifest.json``.

    The trigger is copied beside it (``trigger.safetensors`` / ``.json``) and named in the
    manifest with its SHA-256. With ``test_set``, a clean ``test/`` tree is written too, so the
    folder is a complete data set for ``siba train --data``. The folder is built under a
    temporary name and renamed at the end: a failed or interrupted export leaves nothing it
    created behind, not even the parent folders of ``out_dir`` it had to make.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SibaError(f"{out} exists and is not a folder; choose another output folder")
    if out.exists() and any(out.iterdir()):
        raise SibaError(f"{out} exists and is not empty; choose another output folder")
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    new_parents = _missing_folders(tmp.parent)  # what tmp.mkdir(parents=True) creates, innermost first
    emptied_out = False
    try:
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:
            raise SibaError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
        files = export_image_set(poisoned.data, tmp / "train", progress)
        if test_set is not None:
            export_image_set(test_set, tmp / "test", progress)
        st, js = trigger_paths(tmp / "trigger")
        if trigger_file is not None:
            src_st, src_js = trigger_paths(trigger_file)
            shutil.copyfile(src_st, st)
            if src_js.exists():
                shutil.copyfile(src_js, js)
        else:
            poisoned.mark.save(tmp / "trigger")
        manifest = poisoned.manifest()
        manifest.update({"files": "train/<class>/<index>.png: <index> is the sample's position in the source set",
                         "poisoned_files": [files[i] for i in poisoned.indices.tolist()],
                         "trigger": {"file": st.name, "sha256": file_sha256(st), "description": js.name},
                         "test": "test/<class>/<index>.png (clean)" if test_set is not None else None})
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
            raise SibaError(f"could not write the poisoned set to {out}: {exc}") from None
        raise
    return out


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    manifest = read_json(path)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise SibaError(f"{path} is not a siba poisoned-set manifest")
    return manifest


def index_of(file_id: str) -> int:
    """The sample index encoded in an exported file name ``<class>/<index>.png``."""
    return int(Path(file_id).stem)


def load_exported(folder: str | os.PathLike) -> ImageSet:
    """Read an exported poisoned training set back, in the source set's order."""
    from ..data.folder import load_image_folder

    folder = Path(folder)
    read_manifest(folder)
    data = load_image_folder(folder / "train", cache=False)
    order = torch.tensor(np.argsort([index_of(i) for i in data.ids or []], kind="stable"))
    return data.subset(order, name=folder.name)
