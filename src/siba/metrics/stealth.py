"""How visible a trigger is: L0 (pixels), L∞, PSNR and SSIM between clean and poisoned images.

All functions take float ``[0,1]`` batches ``N×C×H×W`` and return one value per image;
they run batched on any device.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def l0_pixels(clean: torch.Tensor, poisoned: torch.Tensor, tol: float = 0.5 / 255) -> torch.Tensor:
    """Pixel positions (of H×W) where any channel differs by more than ``tol``."""
    return ((poisoned - clean).abs() > tol).any(1).flatten(1).sum(1)


def linf(clean: torch.Tensor, poisoned: torch.Tensor) -> torch.Tensor:
    return (poisoned - clean).abs().flatten(1).amax(1)


def psnr(clean: torch.Tensor, poisoned: torch.Tensor, max_db: float = 100.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (data range 1); identical images give ``max_db``."""
    mse = (poisoned - clean).pow(2).flatten(1).mean(1)
    return torch.where(mse > 0, 10 * torch.log10(1 / mse.clamp_min(1e-20)), torch.full_like(mse, max_db))


@functools.lru_cache(maxsize=8)
def _window_1d(size: int, sigma: float | None) -> torch.Tensor:
    if sigma is None:  # uniform (box) window
        return torch.full((size,), 1.0 / size, dtype=torch.float64)
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(clean: torch.Tensor, poisoned: torch.Tensor, window: int = 7, sigma: float | None = None) -> torch.Tensor:
    """Structural similarity per image, averaged over channels and window positions.

    The default matches ``skimage.metrics.structural_similarity(data_range=1, channel_axis=…)``,
    which backdoor papers (SIBA's Table I included) report: a 7×7 uniform window, sample
    covariances, and only the positions where the window lies inside the image. Pass
    ``window=11, sigma=1.5`` for the Gaussian window of Wang et al. (2004).
    """
    out_dtype = clean.dtype if clean.is_floating_point() else torch.float32
    clean, poisoned = clean.double(), poisoned.double()  # E[x²]−E[x]² cancels badly in float32
    c, h, w = clean.shape[1:]
    window = min(window, h, w)
    window -= 1 - window % 2  # small images: the largest odd window that fits
    g = _window_1d(window, sigma).to(clean.device, clean.dtype)
    wx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    n = window * window
    cov = n / (n - 1) if sigma is None and n > 1 else 1.0  # skimage's sample covariance for the uniform window
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(clean), blur(poisoned)
    sxx = cov * (blur(clean * clean) - mu_x ** 2)
    syy = cov * (blur(poisoned * poisoned) - mu_y ** 2)
    sxy = cov * (blur(clean * poisoned) - mu_x * mu_y)
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).to(out_dtype)


def stealth_metrics(clean: torch.Tensor, poisoned: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``l0``, ``linf``, ``psnr`` and ``ssim``."""
    clean, poisoned = clean.float(), poisoned.float()
    return {"l0": l0_pixels(clean, poisoned).float(), "linf": linf(clean, poisoned), "psnr": psnr(clean, poisoned),
            "ssim": ssim(clean, poisoned)}
