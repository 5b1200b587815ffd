"""``siba data vggface2-subset``: the paper's VGGFace2 subset built from a synthetic VGGFace2-like tree."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siba.cli.main import main
from siba.data import load_dataset
from siba.data import vggface2
from siba.data.vggface2 import build_vggface2_subset

from .test_cli import expect_user_error, snapshot

SHAPES = [(20, 28), (28, 20), (24, 24), (17, 31), (33, 18)]  # (width, height)


def _jpeg(rng: np.random.Generator, k: int, gray: bool = False) -> bytes:
    w, h = SHAPES[k % len(SHAPES)]
    arr = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_tree(root: Path, counts: list[int], seed: int = 0) -> dict[str, int]:
    """Identity folders n000000, n000001, … with ``counts[i]`` small random JPEGs each (varied sizes,
    one grayscale), plus files that are not images. Returns {identity: image count}."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, n in enumerate(counts):
        name = f"n{i:06d}"
        folder = root / name
        folder.mkdir(parents=True)
        for j in range(n):
            (folder / f"{j + 1:04d}_01.jpg").write_bytes(_jpeg(rng, i + j, gray=(i == 1 and j == 0)))
        (folder / "notes.txt").write_text("not an image")
        out[name] = n
    (root / ".hidden").mkdir()
    return out


COUNTS = [3 + (i * 7) % 9 for i in range(25)]  # 3..11 images per identity


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("vggface2") / "identities"
    return root, make_tree(root, COUNTS)


SMALL = dict(identities=5, train_per_class=4, test_per_class=2, size=16, seed=0)


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("built") / "subset"
    manifest = build_vggface2_subset(tree[0], out, progress=False, **SMALL)
    return out, manifest


def _files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))


# --------------------------------------------------------------------------- the subset


def test_choice_counts_and_disjoint_splits(tree, built):
    src, counts = tree
    out, manifest = built
    eligible = {k for k, n in counts.items() if n >= 6}
    assert len(manifest["identities"]) == 5 and len(set(manifest["identities"])) == 5
    assert set(manifest["identities"]) <= eligible
    assert manifest["identities"] == sorted(manifest["identities"])
    assert sorted(manifest["identity_draw_order"]) == manifest["identities"]
    assert manifest["eligible_identities"] == len(eligible) and manifest["source_identities"] == 25
    assert sorted(p.name for p in (out / "train").iterdir()) == manifest["identities"]
    assert sorted(p.name for p in (out / "test").iterdir()) == manifest["identities"]
    for ident in manifest["identities"]:
        train = sorted((out / "train" / ident).iterdir())
        test = sorted((out / "test" / ident).iterdir())
        assert len(train) == 4 and len(test) == 2
        srcs = {split: {manifest["files"][f"{split}/{ident}/{p.name}"]["source"] for p in files}
                for split, files in (("train", train), ("test", test))}
        assert len(srcs["train"]) == 4 and len(srcs["test"]) == 2
        assert not srcs["train"] & srcs["test"]
        assert all(s.startswith(f"{ident}/") and (src / s).is_file() for s in srcs["train"] | srcs["test"])
    assert manifest["skipped_files"] == [] and manifest["skipped_identities"] == []


def test_images_are_square_rgb_pngs_and_manifest_hashes_match(built):
    out, manifest = built
    assert _files(out) == sorted(manifest["files"])
    for rel, entry in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        with Image.open(out / rel) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (16, 16)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["settings"] == {"identities": 5, "train_per_class": 4, "test_per_class": 2, "size": 16, "seed": 0}
    assert "bicubic" in manifest["resize"] and "center crop" in manifest["resize"]
    assert manifest["siba_version"] and manifest["format"] == "siba-vggface2-subset/1"


def test_resize_rule_is_center_crop_then_bicubic(tree, built):
    src, _ = tree
    out, manifest = built
    rel, entry = next((r, e) for r, e in manifest["files"].items())
    with Image.open(src / entry["source"]) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        want = np.asarray(im.crop(box).resize((16, 16), Image.Resampling.BICUBIC))
    with Image.open(out / rel) as got:
        assert np.array_equal(np.asarray(got), want)


def test_grayscale_source_becomes_rgb(tmp_path):
    src = tmp_path / "src"
    make_tree(src, [6, 6])  # n000001 holds one grayscale JPEG
    out = tmp_path / "out"
    manifest = build_vggface2_subset(src, out, identities=2, train_per_class=4, test_per_class=2, size=8,
                                     progress=False)
    gray = next(r for r, e in manifest["files"].items() if e["source"] == "n000001/0001_01.jpg")
    with Image.open(out / gray) as im:
        assert im.mode == "RGB" and im.size == (8, 8)


def test_deterministic_byte_identical(tree, built, tmp_path):
    out, manifest = built
    again = tmp_path / "again"
    manifest2 = build_vggface2_subset(tree[0], again, progress=False, **SMALL)
    assert manifest2 == manifest
    assert snapshot(again) == snapshot(out)  # every PNG and manifest.json, byte for byte
    other = build_vggface2_subset(tree[0], tmp_path / "other", progress=False, **dict(SMALL, seed=1))
    assert other["files"] != manifest["files"]


def test_loads_with_siba_loader(built):
    out, manifest = built
    data = load_dataset(out)
    assert data.num_classes == 5 and data.train.classes == manifest["identities"]
    assert len(data.train) == 5 * 4 and len(data.test) == 5 * 2
    assert data.image_shape == (3, 16, 16)
    assert sorted(data.train.ids) == sorted(f[len("train/"):] for f in manifest["files"] if f.startswith("train/"))


def test_default_identity_count_via_cli(tree, tmp_path, capsys):
    out = tmp_path / "vgg20"
    rc = main(["data", "vggface2-subset", str(tree[0]), str(out), "--train-per-class", "2", "--test-per-class", "1",
               "--size", "8", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out)["identities"] == 20
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("siba data vggface2-subset ")
    assert len(manifest["identities"]) == 20  # the default --identities
    data = load_dataset(out)
    assert data.num_classes == 20 and len(data.train) == 40 and len(data.test) == 20
    assert data.image_shape == (3, 8, 8)


def test_vggface2_layout_draws_from_train(tmp_path):
    src = tmp_path / "VGGFace2"
    make_tree(src / "train", [6, 7, 2, 8], seed=1)
    make_tree(src / "test", [9, 9, 9], seed=2)  # other people: never drawn
    for i in range(3):
        (src / "test" / f"n{i:06d}").rename(src / "test" / f"t{i:06d}")
    manifest = build_vggface2_subset(src, tmp_path / "out", identities=3, train_per_class=4, test_per_class=2,
                                     size=8, progress=False)
    assert manifest["identities"] == ["n000000", "n000001", "n000003"]
    assert all(e["source"].startswith("train/n") for e in manifest["files"].values())
    assert "train/" in manifest["source_layout"]


def test_empty_existing_out_is_used(tree, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    build_vggface2_subset(tree[0], out, progress=False, **dict(SMALL, identities=2))
    assert (out / "manifest.json").is_file() and len(_files(out)) == 12


def test_help_says_what_it_builds_and_that_nothing_is_downloaded(capsys):
    with pytest.raises(SystemExit):
        main(["data", "vggface2-subset", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("Table II", "obtain it yourself", "downloads nothing", "train/", "bicubic", "manifest.json"):
        assert needle in text


# --------------------------------------------------------------------------- unreadable images


def test_unreadable_images_are_skipped_and_replaced(tmp_path, capsys):
    src = tmp_path / "src"
    make_tree(src, [7, 6, 7, 6])
    good = (src / "n000000" / "0001_01.jpg").read_bytes()
    (src / "n000000" / "0002_01.jpg").write_bytes(b"not an image at all")  # 6 readable of 7: still enough
    (src / "n000001" / "0003_01.jpg").write_bytes(good[: len(good) // 2])  # truncated: 5 of 6, too few
    (src / "n000002" / "0004_01.jpg").write_bytes(b"")
    corrupt = {"n000000/0002_01.jpg", "n000001/0003_01.jpg", "n000002/0004_01.jpg"}
    out = tmp_path / "out"
    rc = main(["data", "vggface2-subset", str(src), str(out), "--identities", "3", "--train-per-class", "4",
               "--test-per-class", "2", "--size", "8", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identities"] == ["n000000", "n000002", "n000003"]
    assert set(manifest["skipped_files"]) <= corrupt and manifest["skipped_files"]
    assert not corrupt & {e["source"] for e in manifest["files"].values()}
    assert len(_files(out)) == 3 * 6
    warn = [line for line in cap.err.splitlines() if "warning" in line]
    assert len(warn) == 1 and warn[0].startswith("siba: warning: ") and "unreadable" in warn[0]

    out4 = tmp_path / "out4"
    expect_user_error(capsys, ["data", "vggface2-subset", str(src), str(out4), "--identities", "4",
                               "--train-per-class", "4", "--test-per-class", "2", "--size", "8", "--quiet"],
                      "only 3 identities", "readable")
    assert not out4.exists() and not list(tmp_path.glob(".out4*"))


# --------------------------------------------------------------------------- bad input


def _argv(src, out, *extra):
    return ["data", "vggface2-subset", str(src), str(out), "--train-per-class", "4", "--test-per-class", "2",
            "--size", "16", "--quiet", *extra]


@pytest.mark.parametrize("extra,needles", [
    (["--identities", "30"], ["only 17 of the 25 identities", "at least 6 images", "30 asked"]),
    (["--identities", "0"], ["identities must be a whole number ≥ 1"]),
    (["--train-per-class", "0"], ["train-per-class must be"]),
    (["--test-per-class", "-1"], ["test-per-class must be"]),
    (["--size", "0"], ["size must be"]),
    (["--seed", "-3"], ["seed must be"]),
])
def test_bad_settings_are_one_line_errors_writing_nothing(tree, tmp_path, capsys, extra, needles):
    assert sum(n >= 6 for n in COUNTS) == 17
    out = tmp_path / "new" / "parents" / "out"
    expect_user_error(capsys, _argv(tree[0], out, *extra), *needles)
    assert list(tmp_path.iterdir()) == []


def test_missing_source(tmp_path, capsys):
    expect_user_error(capsys, _argv(tmp_path / "nope", tmp_path / "out"), "not found", "nope")
    assert list(tmp_path.iterdir()) == []


def test_source_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    expect_user_error(capsys, _argv(f, tmp_path / "out"), "is not a folder")
    assert [p.name for p in tmp_path.iterdir()] == ["file.jpg"]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_out_that_exists_and_is_not_empty(tree, tmp_path, capsys, kind):
    out = tmp_path / "out"
    if kind == "folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        out.write_text("mine")
    before = snapshot(tmp_path)
    expect_user_error(capsys, _argv(tree[0], out, "--identities", "2"), "exists and is not empty",
                      "choose another output folder or delete it")
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_interrupted_build_leaves_nothing(tree, tmp_path, monkeypatch):
    real, calls = vggface2._write_png, []

    def flaky(path, arr):
        calls.append(path)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(path, arr)

    monkeypatch.setattr(vggface2, "_write_png", flaky)
    out = tmp_path / "new" / "out"
    with pytest.raises(KeyboardInterrupt):
        build_vggface2_subset(tree[0], out, progress=False, **SMALL)
    assert len(calls) == 7 and list(tmp_path.iterdir()) == []
