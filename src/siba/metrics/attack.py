"""Benign accuracy, attack success rate and stealth of one trigger on one model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data.dataset import ImageSet
from ..runtime import autocast, pick_device, resolve_precision
from .stealth import linf, stealth_metrics

if TYPE_CHECKING:  # metrics sit below attacks: a trigger is used through its interface only
    from ..attacks.trigger import Trigger


@torch.no_grad()
def evaluate_attack(model: nn.Module | None, test_set: ImageSet, mark: Trigger | None, *,
                    device: torch.device | str | None = None, batch_size: int = 1000,
                    precision: str = "auto", full: bool = True) -> dict[str, Any]:
    """One pass over the test set; returns fractions in [0, 1] and stealth averages.

    - ``ba``: accuracy on the clean test images;
    - ``asr``: the share of the counted test images on which the trigger succeeds, with the float
      trigger, as the trigger's labelling rule (``mark.rule``) defines both: all-to-one, the
      images not of the target class classified as the target; all-to-all, every image
      classified as ``(y+1) mod K``; untargeted (UBW-P), the images the model classifies
      correctly when clean, classified as anything else when triggered (then ``dispersibility``
      too: the normalised entropy of the classes the triggered images get, in [0, 1]); ``asr_quantized``: the same with
      the trigger as an 8-bit poisoned image carries it; ``asr_by_class``: the ASR of the
      attacked images of each true class (``None`` for a class with none attacked, such as the
      all-to-one target), to see which source classes resist;
    - stealth, over every test image (clean against poisoned, whatever its class): ``l0`` (the
      mean number of changed pixel positions), ``l0_max`` (the largest), ``linf`` (the largest
      change of any pixel of any image), ``linf_mean`` (the mean over images of each image's
      largest change: the paper's L∞, which gives BadNets' checkerboard 0.81), ``ssim`` and
      ``psnr`` (means) for the float poisoned images, and ``l0_max_quantized``, ``linf_quantized``
      (maxima) for the 8-bit poisoned images;
      ``stealth_over`` says so in the result. ``lpips`` (AlexNet, v0.1; the mean over the same
      images, at the images' own size, stated in ``lpips_image_size``) when its weights are
      installed (see ``docs/lpips.md``) and the images are at least 31×31; otherwise ``None`` with
      ``lpips_note`` saying why — every other metric is computed all the same.

    With ``model=None`` only the stealth metrics are computed; with ``full=False`` only
    ``ba`` and ``asr`` (a quick check during training).
    """
    if device is None:
        device = next(model.parameters()).device if model is not None else torch.device("cpu")
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    if model is not None:
        model.eval().to(dev)
    if mark is not None:
        mark.check_fits(test_set.image_shape, test_set.num_classes)
        mark = mark.to(dev)

    def classify(x: torch.Tensor) -> torch.Tensor:
        assert model is not None
        with autocast(dev, prec):
            return model(x.contiguous(memory_format=torch.channels_last)).argmax(1)

    lpips_model, lpips_note = _lpips_model(test_set.image_shape, dev) if mark is not None and full else (None, None)
    sums: dict[str, float] = {}
    l0_max = linf_max = l0q_max = linfq_max = 0.0
    correct = attacked = hit = hit_q = 0
    attacked_by_class = torch.zeros(test_set.num_classes, dtype=torch.long, device=dev)
    hit_by_class = torch.zeros_like(attacked_by_class)
    rule = mark.rule if mark is not None else None
    triggered_preds: list[torch.Tensor] = []
    for i in range(0, len(test_set), batch_size):
        xu = test_set.images[i:i + batch_size].to(dev)
        y = test_set.labels[i:i + batch_size].to(dev)
        x = xu.float() / 255
        clean_pred = None
        if model is not None:
            clean_pred = classify(x)
            correct += int((clean_pred == y).sum())
        if mark is None:
            continue
        assert rule is not None
        xp = mark.apply(x)
        if not full and model is not None:
            sel = rule.counted(y, clean_pred)
            attacked += int(sel.sum())
            hit += int(rule.success(classify(xp[sel]), y[sel]).sum())
            continue
        xq = mark.apply_uint8(xu).float() / 255
        st = stealth_metrics(x, xp)
        stq = stealth_metrics(x, xq)
        for key in ("l0", "linf", "ssim", "psnr"):
            sums[key] = sums.get(key, 0.0) + float(st[key].sum())
        if lpips_model is not None:
            from .lpips import lpips_distance

            sums["lpips"] = sums.get("lpips", 0.0) + float(lpips_distance(x, xp, model=lpips_model).sum())
        l0_max = max(l0_max, float(st["l0"].max()))
        linf_max = max(linf_max, float(st["linf"].max()))
        l0q_max = max(l0q_max, float(stq["l0"].max()))
        linfq_max = max(linfq_max, float(stq["linf"].max()))
        if model is not None:
            sel = rule.counted(y, clean_pred)
            if sel.any():
                ys = y[sel]
                attacked += int(sel.sum())
                pred = classify(xp[sel])
                won = rule.success(pred, ys)
                if not rule.targeted:
                    triggered_preds.append(pred)
                hit += int(won.sum())
                hit_q += int(rule.success(classify(xq[sel]), ys).sum())
                attacked_by_class += torch.bincount(y[sel], minlength=test_set.num_classes)
                hit_by_class += torch.bincount(y[sel][won], minlength=test_set.num_classes)
    n = len(test_set)
    out: dict[str, Any] = {"n_test": n}
    if model is not None:
        out["ba"] = correct / max(n, 1)
    if mark is not None and not full and model is not None:
        out.update({"asr": hit / max(attacked, 1), "n_attacked": attacked})
    elif mark is not None:
        if model is not None:
            out.update({"asr": hit / max(attacked, 1), "asr_quantized": hit_q / max(attacked, 1),
                        "n_attacked": attacked,
                        "asr_by_class": [h / c if c else None
                                         for h, c in zip(hit_by_class.tolist(), attacked_by_class.tolist())]})
            if not rule.targeted:
                preds = torch.cat(triggered_preds) if triggered_preds else torch.empty(0, dtype=torch.long)
                out["dispersibility"] = dispersibility(preds, test_set.num_classes)
        out.update({"l0": sums["l0"] / n, "l0_max": l0_max, "linf": linf_max, "linf_mean": sums["linf"] / n,
                    "ssim": sums["ssim"] / n,
                    "psnr": sums["psnr"] / n, "l0_max_quantized": l0q_max, "linf_quantized": linfq_max,
                    "stealth_over": f"all {n} test images, clean against poisoned: l0, linf_mean, ssim and psnr "
                                    "are means; "
                                    "l0_max, linf, l0_max_quantized and linf_quantized are maxima "
                                    "(*_quantized: the 8-bit poisoned images)",
                    "lpips": sums["lpips"] / n if "lpips" in sums else None,
                    "lpips_image_size": list(test_set.image_shape[1:])})
        if lpips_note:
            out["lpips_note"] = lpips_note
    return out


@torch.no_grad()
def mean_linf(images: torch.Tensor, mark: Trigger, *, batch_size: int = 1000) -> float:
    """The mean over ``images`` (uint8 ``N×C×H×W``) of each image's largest change under ``mark``
    (float poisoned images): ``evaluate_attack``'s ``linf_mean`` alone, for results made before it."""
    dev = next(iter(mark.tensors().values()), torch.empty(0)).device  # where the trigger's tensors are
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(dev).float() / 255
        total += float(linf(x, mark.apply(x)).sum())
    return total / max(len(images), 1)


def _lpips_model(image_shape: tuple[int, ...], device: torch.device):
    """The LPIPS model for these images, or ``(None, why not)``."""
    from ..errors import SibaError
    from .lpips import default_lpips

    if image_shape[0] != 3 or min(image_shape[1:]) < 31:
        return None, f"LPIPS needs RGB images of at least 31×31 (AlexNet), these are {tuple(image_shape)}"
    try:
        return default_lpips(device), None
    except SibaError as exc:
        return None, str(exc)


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (``N×C×H×W``) moved by ``dy`` rows and ``dx`` columns, zeros where it moves in from outside:
    the view a pad-and-crop augmentation gives at offset ``(dy, dx)``."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


@torch.no_grad()
def asr_under_shifts(model: nn.Module, test_set: ImageSet, mark: Trigger, *, max_shift: int = 4,
                     device: torch.device | str | None = None, batch_size: int = 1000,
                     precision: str = "auto") -> dict[str, Any]:
    """The ASR when the poisoned test image is seen at a crop offset ``(dy, dx)``, for every offset in
    ``−max_shift..max_shift`` (the image, trigger and all, translated with zero fill, as a pad-and-crop
    augmentation shows it). Returns ``{"offsets": [-s..s], "asr": (2s+1)×(2s+1) list [dy][dx],
    "asr_dx": the row dy = 0, "asr_dy": the column dx = 0}`` over the counted test images."""
    dev = pick_device(device) if device is not None else next(model.parameters()).device
    prec = resolve_precision(precision, dev)
    mark.check_fits(test_set.image_shape, test_set.num_classes)
    model.eval().to(dev)
    rule = mark.rule
    offsets = list(range(-max_shift, max_shift + 1))
    hits = torch.zeros(len(offsets), len(offsets), dtype=torch.long)
    counted = 0
    for i in range(0, len(test_set), batch_size):
        x = test_set.images[i:i + batch_size].to(dev).float() / 255
        y = test_set.labels[i:i + batch_size].to(dev)
        with autocast(dev, prec):
            clean_pred = model(x.contiguous(memory_format=torch.channels_last)).argmax(1)
        sel = rule.counted(y, clean_pred)
        if not sel.any():
            continue
        xp, ys = mark.apply(x[sel]), y[sel]
        counted += int(sel.sum())
        for a, dy in enumerate(offsets):
            for b, dx in enumerate(offsets):
                with autocast(dev, prec):
                    pred = model(translate(xp, dy, dx).contiguous(memory_format=torch.channels_last)).argmax(1)
                hits[a, b] += int(rule.success(pred, ys).sum())
    asr = (hits.double() / max(counted, 1)).tolist()
    mid = max_shift
    return {"offsets": offsets, "asr": asr, "asr_dx": asr[mid], "asr_dy": [row[mid] for row in asr],
            "n_attacked": counted}


def dispersibility(pred: torch.Tensor, num_classes: int) -> float:
    """The entropy of the predicted classes' histogram over ``pred``, divided by ``log K`` (in
    [0, 1]: 1 when the predictions spread evenly over every class, 0 when they are one class)."""
    if pred.numel() == 0 or num_classes < 2:
        return float("nan")
    p = torch.bincount(pred.flatten().cpu(), minlength=num_classes).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum() / torch.log(torch.tensor(float(num_classes), dtype=torch.float64)))
