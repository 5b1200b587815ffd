"""Metrics: benign accuracy, attack success rate, and the stealth of a trigger."""

from .attack import dispersibility, evaluate_attack, mean_linf
from .lpips import LPIPS, load_lpips, lpips_available, lpips_distance
from .stealth import l0_pixels, linf, psnr, ssim, stealth_metrics

__all__ = ["LPIPS", "dispersibility", "evaluate_attack", "l0_pixels", "linf", "load_lpips", "lpips_available",
           "lpips_distance", "mean_linf", "psnr", "ssim", "stealth_metrics"]
