"""DeviceLoader batches and the batched random crop / flip."""

from __future__ import annotations

import pytest
import torch

from siba.data import DeviceLoader, random_crop_flip


def _images(n: int, c: int = 3, h: int = 6, w: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # values 1..255: the zero padding is recognisable
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def _windows(img: torch.Tensor, pad: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    c, h, w = img.shape
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[:, dy:dy + h, dx:dx + w]
            out.append((dy, dx, False, win))
            out.append((dy, dx, True, win.flip(-1)))
    return out


def _match(aug: torch.Tensor, img: torch.Tensor, pad: int, allow_flip: bool) -> list[tuple[int, int, bool]]:
    return [(dy, dx, f) for dy, dx, f, win in _windows(img, pad) if (allow_flip or not f) and torch.equal(aug, win)]


# --------------------------------------------------------------------------- random_crop_flip


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_is_a_shifted_window_of_the_padded_image(dtype):
    x = _images(64, h=6, w=7).to(dtype)
    pad = 2
    out = random_crop_flip(x, pad, True, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype
    offsets, flips = set(), set()
    for i in range(x.shape[0]):
        found = _match(out[i], x[i], pad, allow_flip=True)
        assert found, f"image {i} is not a (mirrored) window of its zero-padded original"
        dy, dx, f = found[0]
        offsets.add((dy, dx))
        flips.add(f)
    # genuinely random: many offsets, both with and without mirroring
    assert len(offsets) >= 10
    assert flips == {True, False}


def test_crop_without_flip_never_mirrors():
    x = _images(48)
    out = random_crop_flip(x, 1, False, torch.Generator().manual_seed(2))
    dys = set()
    for i in range(x.shape[0]):
        found = _match(out[i], x[i], 1, allow_flip=False)
        assert found
        dys.add(found[0][0])
    assert dys == {0, 1, 2}


def test_flip_only_gives_the_image_or_its_mirror():
    x = _images(40)
    out = random_crop_flip(x, 0, True, torch.Generator().manual_seed(3))
    kinds = []
    for i in range(x.shape[0]):
        same, mirrored = torch.equal(out[i], x[i]), torch.equal(out[i], x[i].flip(-1))
        assert same or mirrored
        kinds.append(mirrored)
    assert 5 < sum(kinds) < 35  # about half mirrored


def test_no_augmentation_is_identity_and_seeded_is_reproducible():
    x = _images(8)
    assert torch.equal(random_crop_flip(x, 0, False, torch.Generator()), x)
    a = random_crop_flip(x, 2, True, torch.Generator().manual_seed(5))
    b = random_crop_flip(x, 2, True, torch.Generator().manual_seed(5))
    c = random_crop_flip(x, 2, True, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- DeviceLoader


def test_batches_shapes_dtypes_and_values():
    x = _images(10)
    y = torch.arange(10) % 3
    loader = DeviceLoader(x, y, 4)
    assert len(loader) == 3
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    for i, (xb, yb) in enumerate(batches):
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 6, 6)
        assert 0 <= xb.min() and xb.max() <= 1
        assert yb.dtype == torch.int64
        # no shuffle, no augmentation: the images in order, divided by 255
        assert torch.equal(xb, x[i * 4:(i + 1) * 4].float() / 255)
        assert torch.equal(yb, y[i * 4:(i + 1) * 4])
    assert not batches[0][0].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_when_asked():
    x = _images(6)
    y = torch.zeros(6, dtype=torch.long)
    for aug in ({}, {"crop_pad": 1, "flip": True}):
        xb, _ = next(iter(DeviceLoader(x, y, 3, channels_last=True, **aug)))
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
    xb, _ = next(iter(DeviceLoader(x, y, 3, channels_last=True)))
    assert torch.equal(xb, x[:3].float() / 255)  # same values, another layout


def test_every_sample_once_per_epoch_with_shuffle():
    n = 37
    # image i is filled with the value i + 1, so images and labels can be matched
    x = (torch.arange(n, dtype=torch.uint8) + 1).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    y = torch.arange(n)
    loader = DeviceLoader(x, y, 8, shuffle=True, seed=3)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        seen = []
        for xb, yb in loader:
            assert torch.equal((xb[:, 0, 0, 0] * 255).round().long() - 1, yb)  # pairs stay together
            seen += yb.tolist()
        assert sorted(seen) == list(range(n))
        assert seen != list(range(n))  # shuffled


def test_every_sample_once_with_augmentation():
    n = 30
    x = _images(n)
    y = torch.arange(n)
    loader = DeviceLoader(x, y, 7, shuffle=True, crop_pad=2, flip=True, seed=1)
    seen = []
    for xb, yb in loader:
        for img, label in zip(xb, yb):
            seen.append(int(label))
            assert _match((img * 255).round().to(torch.uint8), x[label], 2, allow_flip=True)
    assert sorted(seen) == list(range(n))


def _all_batches(loader):
    return [(xb.clone(), yb.clone()) for xb, yb in loader]


def test_same_seed_and_epoch_give_identical_batches():
    x, y = _images(50), torch.arange(50)
    make = lambda seed: DeviceLoader(x, y, 16, shuffle=True, crop_pad=2, flip=True, seed=seed)  # noqa: E731
    a, b = make(7), make(7)
    a.set_epoch(4)
    b.set_epoch(4)
    ba, bb = _all_batches(a), _all_batches(b)
    assert len(ba) == len(bb) == 4
    for (xa, ya), (xb, yb) in zip(ba, bb):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    again = _all_batches(a)  # iterating the same epoch again replays it
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(ba, again))

    b.set_epoch(5)
    other_epoch = torch.cat([yb for _, yb in _all_batches(b)])
    assert not torch.equal(torch.cat([yb for _, yb in ba]), other_epoch)
    c = make(8)
    c.set_epoch(4)
    assert not torch.equal(torch.cat([yb for _, yb in ba]), torch.cat([yb for _, yb in _all_batches(c)]))


def test_drop_last():
    x, y = _images(10), torch.arange(10)
    loader = DeviceLoader(x, y, 4, shuffle=True, drop_last=True, seed=0)
    assert len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2 and all(xb.shape[0] == 4 for xb, _ in batches)
    labels = torch.cat([yb for _, yb in batches])
    assert labels.unique().numel() == 8  # 8 distinct samples, 2 left out this epoch
    exact = DeviceLoader(x[:8], y[:8], 4, drop_last=True)
    assert len(exact) == 2 and [b[0].shape[0] for b in exact] == [4, 4]
    small = DeviceLoader(x[:3], y[:3], 4, drop_last=True)
    assert len(small) == 0 and list(small) == []
    keep = DeviceLoader(x[:3], y[:3], 4, drop_last=False)
    assert len(keep) == 1 and next(iter(keep))[0].shape[0] == 3
