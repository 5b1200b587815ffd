"""Stealth metrics and attack evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from siba.attacks import AdditiveTrigger, create_attack
from siba.metrics import evaluate_attack, l0_pixels, linf, psnr, ssim


def test_identical_images():
    x = torch.rand(3, 3, 16, 16)
    assert l0_pixels(x, x).tolist() == [0, 0, 0]
    assert linf(x, x).tolist() == [0, 0, 0]
    assert torch.allclose(ssim(x, x), torch.ones(3))
    assert psnr(x, x).tolist() == [100.0] * 3


def test_l0_counts_pixel_positions_not_channels():
    x = torch.zeros(1, 3, 8, 8)
    y = x.clone()
    y[0, :, 0, 0] = 0.5  # one pixel, three channels
    y[0, 1, 3, 4] = 0.5  # one pixel, one channel
    assert l0_pixels(x, y).item() == 2
    assert linf(x, y).item() == 0.5


def test_psnr_known_value():
    x = torch.zeros(1, 1, 4, 4)
    y = torch.full_like(x, 0.1)  # mse 0.01 → 20 dB
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_drops_with_noise_and_matches_reference_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    small = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    large = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s_small, s_large = ssim(x, small), ssim(x, large)
    assert (s_small > 0.95).all() and (s_large < s_small).all()
    # a constant shift of a constant image: SSIM = (2ab + c1) / (a² + b² + c1) exactly
    a, b = torch.full((1, 1, 16, 16), 0.4), torch.full((1, 1, 16, 16), 0.5)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    assert ssim(a, b).item() == pytest.approx((2 * 0.4 * 0.5 + c1) / (0.4 ** 2 + 0.5 ** 2 + c1), rel=1e-5)
    # one 7×7 window: the textbook formula with sample (n−1) covariances, as skimage computes it
    u, v = torch.rand(1, 1, 7, 7, generator=g, dtype=torch.float64), torch.rand(1, 1, 7, 7, generator=g,
                                                                                  dtype=torch.float64)
    mx, my = u.mean(), v.mean()
    vx, vy = u.var(unbiased=True), v.var(unbiased=True)
    cxy = ((u - mx) * (v - my)).sum() / 48
    ref = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert ssim(u, v).item() == pytest.approx(ref.item(), rel=1e-9)
    # the Gaussian window of Wang et al. is available too
    assert ssim(x, small, window=11, sigma=1.5).shape == (2,)


class _Oracle(torch.nn.Module):
    """Predicts class 0 when pixel (0,0) of channel 0 is bright, else the true class hidden in pixel (1,1)."""

    siba_spec = {"arch": "oracle", "num_classes": 4, "kwargs": {}}

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        cls = (x[:, 1, 1, 1] * 3).round().long().clamp(0, 3)
        out = torch.nn.functional.one_hot(cls, 4).float()
        hit = x[:, 0, 0, 0] > 0.9
        out[hit] = torch.nn.functional.one_hot(torch.zeros_like(cls[hit]), 4).float()
        return out + 0 * self.dummy


def _oracle_set(pre_lit: int | None = None):
    """20 4×4 images of 4 classes that _Oracle reads correctly; the images of class ``pre_lit``
    start with pixel (0, 0) of channel 0 at 0.5, so a half-strength trigger tips only them."""
    from siba.data import ImageSet

    labels = torch.tensor([0, 1, 2, 3] * 5)
    images = torch.zeros(20, 3, 4, 4)
    images[:, 1, 1, 1] = labels.float() / 3
    if pre_lit is not None:
        images[labels == pre_lit, 0, 0, 0] = 0.5
    return ImageSet((images * 255).round().to(torch.uint8), labels, ["a", "b", "c", "d"])


def _corner_trigger(amplitude: float, eps: float = 1.0) -> AdditiveTrigger:
    """A one-pixel trigger at (0, 0) of channel 0, all-to-one towards class 0."""
    mask = torch.zeros(4, 4)
    mask[0, 0] = 1
    delta = torch.zeros(3, 4, 4)
    delta[0, 0, 0] = amplitude
    return AdditiveTrigger(delta, mask, eps=eps, k=1, num_classes=4, target=0)


def test_evaluate_attack_counts_only_non_target_images():
    data = _oracle_set()
    ev = evaluate_attack(_Oracle(), data, _corner_trigger(1.0), device="cpu")
    assert ev["ba"] == 1.0
    assert ev["asr"] == 1.0 and ev["asr_quantized"] == 1.0
    assert ev["n_attacked"] == 15  # the 5 images of the target class are not counted
    assert ev["l0"] == 1.0 and ev["l0_max"] == 1 and ev["linf"] == pytest.approx(1.0)
    # a trigger that does nothing gives ASR 0
    assert evaluate_attack(_Oracle(), data, _corner_trigger(0.5), device="cpu")["asr"] == 0.0


def test_badnets_stealth_numbers():
    """Images whose bottom-right 3×3 corner is the inverse of the checkerboard: the patch moves each of
    its 9 pixels, in every channel, from black to white or back, so L0 = 9 and L∞ = 1 exactly."""
    from siba.attacks import checkerboard
    from siba.data import ImageSet
    from tests.conftest import make_set

    base = make_set(16, classes=4, size=32)
    images = base.images.clone()
    images[:, :, -3:, -3:] = ((1 - checkerboard(3)) * 255).to(torch.uint8)
    data = ImageSet(images, base.labels, base.classes)
    trig = create_attack("badnets").generate(data)
    ev = evaluate_attack(None, data, trig)
    assert ev["l0"] == 9.0 and ev["l0_max"] == 9 and ev["linf"] == 1.0
    assert ev["l0_max_quantized"] == 9 and ev["linf_quantized"] == 1.0  # the 8-bit poisoned images too
    # mean squared error 27/3072 (27 channel values change by 1 of 3×32×32) for every image
    assert ev["psnr"] == pytest.approx(10 * math.log10(3072 / 27), abs=1e-4)
    assert "asr" not in ev and 0 < ev["ssim"] < 1
    # an image whose corner already is the patch is not changed at all
    images[:, :, -3:, -3:] = (checkerboard(3) * 255).to(torch.uint8)
    same = evaluate_attack(None, ImageSet(images, base.labels, base.classes), trig)
    assert same["l0"] == 0 and same["linf"] == 0 and same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0)


def test_evaluate_attack_reports_the_asr_of_each_source_class():
    data = _oracle_set(pre_lit=2)  # a half-strength trigger tips only the images of class 2
    ev = evaluate_attack(_Oracle(), data, _corner_trigger(0.5, eps=0.5), device="cpu")
    assert ev["asr_by_class"] == [None, 0.0, 1.0, 0.0]  # no image of the target class is attacked
    assert ev["asr"] == pytest.approx(5 / 15)


class _NextOracle(_Oracle):
    """Reads the true class from pixel (1,1); when pixel (0,0) of channel 0 is bright it answers
    (y+1) mod 4 for the images of classes 0 and 1 and keeps its answer for classes 2 and 3."""

    def forward(self, x):
        cls = (x[:, 1, 1, 1] * 3).round().long().clamp(0, 3)
        moved = (x[:, 0, 0, 0] > 0.9) & (cls < 2)
        return torch.nn.functional.one_hot(torch.where(moved, (cls + 1) % 4, cls), 4).float() + 0 * self.dummy


def test_all_to_all_asr_counts_every_image_towards_its_own_next_class():
    data = _oracle_set()
    corner = _corner_trigger(1.0)
    all_to_all = AdditiveTrigger(corner.delta, corner.mask, eps=1.0, k=1, num_classes=4, target_rule="all-to-all")
    ev = evaluate_attack(_NextOracle(), data, all_to_all, device="cpu")
    assert ev["ba"] == 1.0
    assert ev["n_attacked"] == 20  # every class is attacked, the all-to-one target's too
    assert ev["asr"] == 0.5 and ev["asr_quantized"] == 0.5
    assert ev["asr_by_class"] == [1.0, 1.0, 0.0, 0.0]
    # the same model judged all-to-one towards class 0: 0 → 1 and 1 → 2 are no hits
    one = evaluate_attack(_NextOracle(), data, corner, device="cpu")
    assert one["n_attacked"] == 15 and one["asr"] == 0.0
