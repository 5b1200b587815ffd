"""Metrics: benign accuracy, attack success rate, and the stealth of a trigger."""

from .attack import evaluate_attack
from .stealth import l0_pixels, linf, psnr, ssim, stealth_metrics

__all__ = ["evaluate_attack", "l0_pixels", "linf", "psnr", "ssim", "stealth_metrics"]
