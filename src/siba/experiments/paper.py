"""The paper's own numbers (SIBA, IEEE TIFS 2024), for printing beside ours.

Table I (CIFAR-10) and Table II (the 20-identity VGGFace2 subset), per victim architecture:
BA and ASR in percent as printed; L0 in pixels; L∞, LPIPS and SSIM as printed (the paper's
LPIPS is at the data's image size, 32×32 for CIFAR-10). ``None``: the paper prints none.
"""

from __future__ import annotations

from typing import Any

TABLE_ATTACKS = ("clean", "badnets", "blended", "tuap", "wanet", "issba", "ubw-p", "random", "sparse", "siba")
_METRICS = ("ba", "asr", "l0", "linf", "lpips", "ssim")


def _rows(ba, asr, l0, linf, lpips, ssim) -> dict[str, dict[str, Any]]:
    out = {}
    for i, name in enumerate(TABLE_ATTACKS):
        out[name] = dict(zip(_METRICS, (ba[i], asr[i], l0[i], linf[i], lpips[i], ssim[i])))
    return out


_CIFAR_STEALTH = dict(
    l0=[None, 9, 1020, 1020, 1016, 1024, 9, 100, 100, 100],
    linf=[None, 0.81, 0.19, 0.03, 0.19, 0.05, 0.81, 0.03, 0.03, 0.03],
    lpips=[None, 0.001, 0.028, 0.001, 0.003, 0.001, 0.001, 0.001, 0.001, 0.001],
    ssim=[None, 0.974, 0.774, 0.919, 0.973, 0.989, 0.974, 0.995, 0.992, 0.993],
)
_FACE_STEALTH = dict(
    l0=[None, 400, 16384, 16332, 15892, 16382, 400, 1600, 1600, 1600],
    linf=[None, 0.92, 0.20, 0.03, 0.23, 0.04, 0.92, 0.03, 0.03, 0.03],
    lpips=[None, 0.08, 0.18, 0.05, 0.02, 0.01, 0.08, 0.01, 0.01, 0.01],
    ssim=[None, 0.965, 0.538, 0.870, 0.975, 0.974, 0.965, 0.989, 0.984, 0.987],
)

PAPER_TABLES: dict[str, dict[str, dict[str, Any]]] = {
    "table1-resnet18": _rows(
        ba=[94.67, 94.41, 94.58, 94.53, 94.29, 94.57, 94.46, 94.13, 94.44, 94.06],
        asr=[None, 100, 98.16, 85.47, 47.90, 0.76, 64.78, 2.87, 88.49, 97.60], **_CIFAR_STEALTH),
    "table1-vgg16": _rows(
        ba=[93.34, 93.25, 93.31, 93.06, 92.09, 93.15, 93.16, 92.69, 92.59, 92.84],
        asr=[None, 100, 98.28, 69.13, 7.53, 1.24, 10.02, 1.48, 66.44, 91.22], **_CIFAR_STEALTH),
    "table2-resnet18": _rows(
        ba=[79.75, 78.80, 78.80, 78.75, 79.05, 78.30, 77.85, 77.80, 78.25, 78.85],
        asr=[None, 93.68, 99.95, 85.84, 3.32, 1.00, 38.20, 1.74, 27.79, 96.21], **_FACE_STEALTH),
    "table2-vgg16": _rows(
        ba=[86.35, 86.15, 86.30, 85.90, 85.75, 85.40, 84.50, 85.90, 85.65, 86.15],
        asr=[None, 98.42, 100, 83.68, 2.95, 87.53, 48.10, 4.63, 41.68, 96.37], **_FACE_STEALTH),
}
PAPER_SETTINGS = {
    "table1-resnet18": "CIFAR-10, ResNet-18 victims, 100 epochs with pad-4 crop + flip, 1% poisoning, target 0",
    "table1-vgg16": "CIFAR-10, VGG-16 victims, 100 epochs with pad-4 crop + flip, 1% poisoning, target 0",
    "table2-resnet18": "VGGFace2 20-identity subset at 128×128, ResNet-18 victims (ImageNet-pretrained)",
    "table2-vgg16": "VGGFace2 20-identity subset at 128×128, VGG-16 victims (ImageNet-pretrained)",
}


def paper_table_for(data_classes: int, image_size: int, victim_model: str) -> str:
    """Which of the paper's tables a run is compared with: Table II for 20 classes at ≥ 64 px, else
    Table I; the VGG column for a VGG victim, else the ResNet-18 one."""
    table = "table2" if data_classes == 20 and image_size >= 64 else "table1"
    return f"{table}-{'vgg16' if victim_model.startswith('vgg') else 'resnet18'}"
