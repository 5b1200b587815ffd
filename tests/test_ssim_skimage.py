"""SSIM "as scikit-image computes it": siba's batched SSIM against skimage.metrics.structural_similarity.

The README and docs/design.md promise that the SSIM siba reports is the one backdoor papers report,
``skimage.metrics.structural_similarity(data_range=1, channel_axis=…)``. These tests hold it to that
on real images (the shipped CIFAR-10 subset) changed the ways siba changes them (a random sparse
trigger, BadNets' patch, their 8-bit poisoned images) and the ways images get degraded (a real JPEG
round trip, Gaussian noise), image by image, to 1e-5.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from siba.attacks import create_attack
from siba.data import load_dataset
from siba.metrics import ssim

skimage_metrics = pytest.importorskip("skimage.metrics")  # a test dependency (pyproject's test extra)

N = 48  # test images per comparison: a few seconds for skimage's per-image loop


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SIBA_CACHE", str(tmp_path_factory.getbasetemp() / "siba-cache"))
    try:
        return load_dataset("cifar10-mini")
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def clean(data) -> torch.Tensor:
    return data.test.images[:N].float() / 255


def reference(x: torch.Tensor, y: torch.Tensor, **kw) -> np.ndarray:
    """scikit-image's SSIM of each pair of C×H×W images, in float64."""
    a, b = x.double().numpy(), y.double().numpy()
    return np.array([skimage_metrics.structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0, **kw)
                     for i in range(len(a))])


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image after a real JPEG round trip (PIL) at ``quality``."""
    out = []
    for img in (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).float() / 255


def assert_agrees(x: torch.Tensor, y: torch.Tensor, **kw) -> np.ndarray:
    ours = ssim(x, y, **kw).double().numpy()
    ref = reference(x, y) if not kw else reference(x, y, gaussian_weights=True, sigma=1.5,
                                                   use_sample_covariance=False)
    assert ours.shape == ref.shape == (len(x),)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    return ref


def test_identical_images_have_ssim_one(clean):
    np.testing.assert_allclose(ssim(clean, clean).double().numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(reference(clean[:4], clean[:4]), 1.0, atol=1e-12)


@pytest.mark.parametrize("attack, settings", [
    ("random", {"k": 100, "eps": 8 / 255}),  # SIBA's budget with a random mask and values
    ("random", {"k": 1024, "eps": 16 / 255}),  # every pixel moved
    ("badnets", {}),  # the 3×3 black-and-white patch
    ("badnets", {"size": 8, "pattern": "white", "corner": "top-left"}),
])
def test_poisoned_images_agree_with_skimage(data, clean, attack, settings):
    mark = create_attack(attack, seed=0, **settings).generate(data.train)
    poisoned = mark.apply(clean)
    ref = assert_agrees(clean, poisoned)
    assert (ref < 1).all()  # every image was changed: the comparison is not one of ones
    assert_agrees(clean, mark.apply_uint8(data.test.images[:N]).float() / 255)  # as an 8-bit image carries it


@pytest.mark.parametrize("quality", [90, 50, 10])
def test_jpeg_degraded_images_agree_with_skimage(clean, quality):
    ref = assert_agrees(clean, jpeg(clean, quality))
    assert ref.min() < 0.99 and ref.max() < 1


@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.3])
def test_noisy_images_agree_with_skimage(clean, sigma):
    g = torch.Generator().manual_seed(0)
    noisy = (clean + sigma * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    ref = assert_agrees(clean, noisy)
    assert ref.std() > 0  # images differ in how much the noise costs them


def test_the_gaussian_window_agrees_with_skimage_gaussian_weights(clean):
    """``window=11, sigma=1.5``: Wang et al.'s window, which skimage computes with gaussian_weights=True,
    sigma=1.5 and population covariances (use_sample_covariance=False)."""
    assert_agrees(clean, jpeg(clean, 30), window=11, sigma=1.5)
