"""Image-folder trees (folders and .tar.gz), safe extraction, the decode cache, load_dataset."""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siba.data.folder as folder_mod
from siba.data import CIFAR10_CLASSES, load_dataset, load_image_folder, safe_extract
from siba.errors import SibaError

CLASSES = ["bird", "cat", "dog"]  # sorted already: label i is CLASSES[i]


def _pixels(seed: int, h: int = 8, w: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_tree(root: Path, per_class: int = 2, size: tuple[int, int] = (8, 8), fmt: str = "PNG",
              seed: int = 0) -> dict[str, np.ndarray]:
    """``root/<class>/<i>.png`` with random pixels; returns {id: H×W×3 array} of what was written."""
    written: dict[str, np.ndarray] = {}
    ext = "png" if fmt == "PNG" else "jpg"
    for ci, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = _pixels(seed * 1000 + ci * 100 + i, *size)
            Image.fromarray(arr).save(root / cls / f"{i}.{ext}", format=fmt)
            written[f"{cls}/{i}.{ext}"] = arr
    return written


def make_tar(tree: Path, archive: Path, arcname: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=arcname or tree.name)
    return archive


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels(seed)).save(buf, format="PNG")
    return buf.getvalue()


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*"))


# --------------------------------------------------------------------------- loading


def test_png_tree_loads_exact_pixels_labels_classes_ids(tmp_path):
    written = make_tree(tmp_path / "tree", per_class=2)
    s = load_image_folder(tmp_path / "tree")
    assert s.images.dtype == torch.uint8 and s.images.shape == (6, 3, 8, 8)
    assert s.classes == CLASSES
    assert s.labels.dtype == torch.int64
    assert s.ids == sorted(written)
    assert s.name == "tree"
    for i, ident in enumerate(s.ids):
        assert s.labels[i].item() == CLASSES.index(ident.split("/")[0])
        # PNG is lossless: C×H×W of the loaded image is the written H×W×C array
        assert torch.equal(s.images[i], torch.from_numpy(written[ident]).permute(2, 0, 1))
    assert s.class_counts() == [2, 2, 2]


def test_jpeg_tree_loads_close_to_written_colours(tmp_path):
    root = tmp_path / "jpg"
    colours = {"bird": (200, 30, 30), "cat": (30, 200, 30), "dog": (30, 30, 200)}
    for cls, rgb in colours.items():
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), rgb).save(root / cls / f"{i}.jpeg", format="JPEG", quality=95)
    s = load_image_folder(root, name="custom")
    assert s.name == "custom"
    assert s.images.shape == (6, 3, 8, 8) and s.classes == CLASSES
    for i in range(6):
        want = torch.tensor(colours[CLASSES[s.labels[i]]], dtype=torch.float32).view(3, 1, 1)
        assert (s.images[i].float() - want).abs().max() <= 4


def test_mixed_png_and_jpeg_and_nested_root(tmp_path):
    # A single shared top folder (train/<class>/x) is taken as the tree's root.
    make_tree(tmp_path / "data" / "train", per_class=1, fmt="PNG")
    make_tree(tmp_path / "data" / "train", per_class=1, fmt="JPEG", seed=1)
    s = load_image_folder(tmp_path / "data")
    assert s.classes == CLASSES
    assert len(s) == 6
    assert all(i.split("/")[0] in CLASSES for i in s.ids)
    assert {Path(i).suffix for i in s.ids} == {".png", ".jpg"}


def test_non_image_file_is_skipped_with_a_warning(tmp_path):
    make_tree(tmp_path / "tree", per_class=2)
    (tmp_path / "tree" / "cat" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt"):
        s = load_image_folder(tmp_path / "tree", cache=False)
    assert len(s) == 6
    assert not any("notes" in i for i in s.ids)


def test_corrupt_image_raises_naming_the_file(tmp_path):
    make_tree(tmp_path / "tree", per_class=2)
    bad = tmp_path / "tree" / "cat" / "x.jpg"
    bad.write_bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(SibaError, match="corrupt image") as exc:
        load_image_folder(tmp_path / "tree")
    assert str(bad) in str(exc.value)


def test_corrupt_image_in_archive_raises_naming_the_member(tmp_path):
    make_tree(tmp_path / "tree", per_class=1)
    (tmp_path / "tree" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    arc = make_tar(tmp_path / "tree", tmp_path / "tree.tar.gz")
    with pytest.raises(SibaError, match="broken.png"):
        load_image_folder(arc)


def test_resize_with_size(tmp_path):
    root = tmp_path / "tree"
    for ci, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        # different sizes on purpose; each image one solid colour
        Image.new("RGB", (8 + ci, 10 - ci), (10 * ci, 100, 250)).save(root / cls / "a.png")
    s = load_image_folder(root, size=4)
    assert s.images.shape == (3, 3, 4, 4)
    for i in range(3):  # a solid colour stays that colour when resized
        assert s.images[i, 0].unique().tolist() == [10 * s.labels[i].item()]
        assert s.images[i, 2].unique().tolist() == [250]
    s2 = load_image_folder(root, size=(4, 6))  # (H, W)
    assert s2.images.shape == (3, 3, 4, 6)
    with pytest.raises(SibaError, match="positive"):
        load_image_folder(root, size=0)


def test_different_sizes_without_size_is_an_error(tmp_path):
    make_tree(tmp_path / "tree", per_class=1)
    Image.fromarray(_pixels(9, 10, 12)).save(tmp_path / "tree" / "dog" / "big.png")
    with pytest.raises(SibaError, match="size"):
        load_image_folder(tmp_path / "tree")


def test_loose_image_outside_class_folder_and_empty_tree(tmp_path):
    make_tree(tmp_path / "tree", per_class=1)
    Image.fromarray(_pixels(1)).save(tmp_path / "tree" / "loose.png")
    with pytest.raises(SibaError, match="class folder"):
        load_image_folder(tmp_path / "tree")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(SibaError, match="no images"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(SibaError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SibaError, match="neither a folder"):
        load_image_folder(tmp_path / "file.txt")


def test_tar_gz_loads_identically_to_the_folder(tmp_path):
    make_tree(tmp_path / "train", per_class=3)
    a = load_image_folder(tmp_path / "train")
    arc = make_tar(tmp_path / "train", tmp_path / "train.tar.gz")
    b = load_image_folder(arc)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert a.classes == b.classes
    assert a.ids == b.ids
    # the same tree archived without its top folder
    arc2 = tmp_path / "flat.tar.gz"
    with tarfile.open(arc2, "w:gz") as tar:
        for cls in CLASSES:
            tar.add(tmp_path / "train" / cls, arcname=cls)
    c = load_image_folder(arc2)
    assert torch.equal(a.images, c.images) and a.ids == c.ids


def test_unreadable_archive_is_an_error(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not gzip data at all" * 10)
    with pytest.raises(SibaError, match="not a readable archive"):
        load_image_folder(bad)


# --------------------------------------------------------------------------- unsafe archives


@pytest.mark.parametrize("evil", ["../evil.jpg", "train/../../evil.jpg", "ABSOLUTE"])
def test_path_traversal_is_refused(tmp_path, evil):
    work = tmp_path / "work"
    work.mkdir()
    if evil == "ABSOLUTE":
        evil = str(tmp_path / "abs-evil.jpg")  # an absolute member name
        assert evil.startswith("/")
    arc = work / "evil.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        _add_bytes(tar, "train/cat/ok.png", _png_bytes())
        _add_bytes(tar, evil, _png_bytes(1))
    with tarfile.open(arc) as tar:  # the archive really holds the hostile name
        assert evil in tar.getnames()
    before = _files_under(tmp_path)
    with pytest.raises(SibaError, match="unsafe archive entry"):
        load_image_folder(arc)
    dest = work / "dest"
    with pytest.raises(SibaError, match="unsafe archive entry"):
        safe_extract(arc, dest)
    outside = [p for p in _files_under(tmp_path) if p not in before and dest not in p.parents and p != dest]
    assert outside == []
    assert not (work / "evil.jpg").exists() and not (tmp_path / "evil.jpg").exists()
    assert not (tmp_path / "abs-evil.jpg").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_members_are_refused(tmp_path, kind):
    target_file = tmp_path / "secret.txt"
    target_file.write_text("secret")
    arc = tmp_path / "links.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        _add_bytes(tar, "train/cat/ok.png", _png_bytes())
        link = tarfile.TarInfo("train/cat/link.png")
        link.type = kind
        link.linkname = str(target_file) if kind == tarfile.SYMTYPE else "train/cat/ok.png"
        tar.addfile(link)
    with pytest.raises(SibaError, match="links are not accepted"):
        load_image_folder(arc)
    dest = tmp_path / "dest"
    with pytest.raises(SibaError, match="links are not accepted"):
        safe_extract(arc, dest)
    assert not (dest / "train" / "cat" / "link.png").exists()
    assert not (dest / "train" / "cat" / "link.png").is_symlink()
    assert target_file.read_text() == "secret"


def test_device_member_is_refused(tmp_path):
    arc = tmp_path / "dev.tar"
    with tarfile.open(arc, "w") as tar:
        dev = tarfile.TarInfo("train/cat/dev.png")
        dev.type = tarfile.CHRTYPE
        tar.addfile(dev)
    with pytest.raises(SibaError, match="special files"):
        safe_extract(arc, tmp_path / "dest")


def test_safe_extract_writes_a_good_archive(tmp_path):
    written = make_tree(tmp_path / "train", per_class=2)
    arc = make_tar(tmp_path / "train", tmp_path / "train.tar.gz")
    dest = safe_extract(arc, tmp_path / "out")
    assert dest == tmp_path / "out"
    for ident, arr in written.items():
        f = tmp_path / "out" / "train" / ident
        assert f.is_file()
        assert np.array_equal(np.asarray(Image.open(f).convert("RGB")), arr)
    assert torch.equal(load_image_folder(tmp_path / "out" / "train").images,
                       load_image_folder(tmp_path / "train").images)


# --------------------------------------------------------------------------- cache


def _counting_decode(monkeypatch):
    calls = {"n": 0}
    real = folder_mod._decode

    def fake(data, where, size):
        calls["n"] += 1
        return real(data, where, size)

    monkeypatch.setattr(folder_mod, "_decode", fake)
    return calls


def _refusing_decode(monkeypatch):
    def refuse(data, where, size):
        raise AssertionError(f"decoded {where} again: the cache was not used")

    monkeypatch.setattr(folder_mod, "_decode", refuse)


@pytest.mark.parametrize("as_archive", [False, True])
def test_decode_cache_is_used_on_second_load(tmp_path, monkeypatch, as_archive):
    make_tree(tmp_path / "train", per_class=2)
    src = make_tar(tmp_path / "train", tmp_path / "train.tar.gz") if as_archive else tmp_path / "train"
    calls = _counting_decode(monkeypatch)
    first = load_image_folder(src)
    assert calls["n"] == 6
    _refusing_decode(monkeypatch)
    second = load_image_folder(src)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.classes == second.classes and first.ids == second.ids
    with pytest.raises(AssertionError, match="cache was not used"):
        load_image_folder(src, cache=False)  # the patch is in effect: without the cache it decodes
    with pytest.raises(AssertionError, match="cache was not used"):
        load_image_folder(src, size=4)  # another size is another cache entry


def test_cache_notices_a_changed_tree(tmp_path, monkeypatch):
    make_tree(tmp_path / "train", per_class=2)
    first = load_image_folder(tmp_path / "train")
    Image.fromarray(_pixels(77)).save(tmp_path / "train" / "dog" / "new.png")
    second = load_image_folder(tmp_path / "train")
    assert len(second) == len(first) + 1
    assert "dog/new.png" in second.ids


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    from siba.runtime import cache_dir

    make_tree(tmp_path / "train", per_class=1)
    before = set((cache_dir() / "folders").glob("*.safetensors")) if (cache_dir() / "folders").exists() else set()
    first = load_image_folder(tmp_path / "train")
    new = set((cache_dir() / "folders").glob("*.safetensors")) - before
    assert len(new) == 1
    entry = new.pop()
    entry.write_bytes(b"garbage")
    again = load_image_folder(tmp_path / "train")
    assert torch.equal(first.images, again.images)


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_folder_with_train_and_test(tmp_path):
    root = tmp_path / "myset"
    make_tree(root / "train", per_class=3)
    make_tree(root / "test", per_class=1, seed=5)
    d = load_dataset(root)
    assert d.name == "myset"
    assert len(d.train) == 9 and len(d.test) == 3
    assert d.classes == CLASSES and d.num_classes == 3
    assert d.image_shape == (3, 8, 8)
    assert d.train.name == "myset-train" and d.test.name == "myset-test"
    # an image-folder set is resized when a size is asked
    d4 = load_dataset(root, size=4)
    assert d4.image_shape == (3, 4, 4)


def test_load_dataset_with_archived_splits(tmp_path):
    root = tmp_path / "arch"
    root.mkdir()
    make_tree(tmp_path / "src" / "train", per_class=2)
    make_tree(tmp_path / "src" / "test", per_class=1, seed=2)
    make_tar(tmp_path / "src" / "train", root / "train.tar.gz")
    make_tar(tmp_path / "src" / "test", root / "test.tar.gz")
    d = load_dataset(root)
    ref = load_dataset(tmp_path / "src")
    assert torch.equal(d.train.images, ref.train.images) and torch.equal(d.test.labels, ref.test.labels)


def test_load_dataset_errors(tmp_path):
    with pytest.raises(SibaError, match="no-such-data-set-xyz"):
        load_dataset("no-such-data-set-xyz")
    only_train = tmp_path / "half"
    make_tree(only_train / "train", per_class=1)
    with pytest.raises(SibaError, match="train/ and test/"):
        load_dataset(only_train)
    f = tmp_path / "somefile.bin"
    f.write_bytes(b"x")
    with pytest.raises(SibaError, match="not a data set"):
        load_dataset(f)


def test_load_dataset_mismatched_classes_between_splits(tmp_path):
    root = tmp_path / "mm"
    make_tree(root / "train", per_class=1)
    (root / "test" / "zebra").mkdir(parents=True)
    Image.fromarray(_pixels(1)).save(root / "test" / "zebra" / "z.png")
    with pytest.raises(SibaError, match="different classes"):
        load_dataset(root)


def test_cifar10_mini():
    d = load_dataset("cifar10-mini")
    assert d.name == "cifar10-mini"
    assert d.train.images.shape == (5000, 3, 32, 32) and d.train.images.dtype == torch.uint8
    assert d.test.images.shape == (1000, 3, 32, 32)
    assert d.classes == CIFAR10_CLASSES
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck" and len(d.classes) == 10
    assert d.train.class_counts() == [500] * 10
    assert d.test.class_counts() == [100] * 10
    assert d.train.ids[0].startswith("airplane/")
    # real photographs, not blank images: a spread of pixel values in every channel
    assert d.train.images.float().std(dim=(0, 2, 3)).min() > 40
    assert load_dataset().train.images.shape == d.train.images.shape  # the default data set
    assert load_dataset("cifar10-mini", size=32).image_shape == (3, 32, 32)


def test_cifar10_mini_other_size_is_resized():
    # cifar10-mini is an image-folder set: a size other than 32 resizes it (the CIFAR-10
    # python format, by contrast, refuses it; see test_cifar.py).
    d = load_dataset("cifar10-mini", size=16)
    assert d.image_shape == (3, 16, 16)
    assert len(d.train) == 5000 and len(d.test) == 1000
    ref = load_dataset("cifar10-mini")
    assert torch.equal(d.train.labels, ref.train.labels)
    # resizing preserves the image content on average (bilinear of the same photograph)
    small_mean = d.test.images.float().mean(dim=(2, 3))
    ref_mean = ref.test.images.float().mean(dim=(2, 3))
    assert (small_mean - ref_mean).abs().mean() < 3


def test_image_set_validation():
    from siba.data import ImageSet

    with pytest.raises(SibaError, match="uint8"):
        ImageSet(torch.zeros(2, 3, 4, 4), torch.zeros(2), ["a", "b"])
    with pytest.raises(SibaError, match="labels outside"):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ImageSet(torch.zeros(4, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    assert s.float_images().dtype == torch.float32
