"""ISSBA (Li et al., ICCV 2021): a sample-specific invisible trigger made by a trained steganographic encoder.

A StegaStamp-style (Tancik et al., CVPR 2020) encoder/decoder pair is trained to hide a bit string
in an image: the encoder takes an image ``x`` and a secret of ``bits`` bits and outputs a residual,
the encoded image is ``clip(x + encoder(x, secret), 0, 1)``, and the decoder reads the bits back
from it. The attack then fixes one secret (a seeded bit string) and poisons an image with
``clip(x + encoder(x, secret), 0, 1)``: a different, image-dependent, nearly invisible change for
every image, which the victim learns to tie to the target class.

Here the pair is sized for small images (32×32 CIFAR, any ``H×W ≥ 16``) and trained from scratch on a
seeded subset of the training set, on the CPU in minutes (see ``docs/issba.md`` for the figures):

- **encoder** (:class:`StegaEncoder`): the secret goes through a dense layer to a ``C×⌈H/4⌉×⌈W/4⌉``
  map, upsampled (nearest) to ``H×W`` and stacked with the image; a U-Net of three stride-2 levels
  (widths ``w, 2w, 4w``) with skip connections, the input stacked again at the top, and a 1×1
  convolution to a ``C``-channel residual (no activation, as StegaStamp);
- **decoder** (:class:`StegaDecoder`): five 3×3 convolutions (three of stride 2), an average pool to
  4×4 and two dense layers to one logit per bit (StegaStamp's spatial transformer is left out: the
  images here are never printed and photographed, so there is no geometry to undo);
- **losses**: the bit loss is the binary cross-entropy of the decoder's logits against *random*
  secrets drawn per batch (StegaStamp's training; the attack uses one fixed secret afterwards);
  the image loss is ``l2_weight · MSE(x_enc, x) + lpips_weight · LPIPS(x_enc, x)`` (LPIPS AlexNet
  from :mod:`siba.metrics.lpips` when its weights are installed and the images are RGB and at
  least 31×31; otherwise the L2 term alone, with a logged note);
- **schedule**: as StegaStamp, the first ``warmup`` share of the steps trains the bit loss alone,
  then the image-loss weight ramps linearly from 0 to 1 over the next ``ramp`` share and stays at 1;
- **noise**: the decoder sees the encoded image plus uniform noise of half an 8-bit level, so it also
  reads images after they are rounded to 8 bits (the poisoned set is released as 8-bit images).

Training is seeded per step (the batch, the random secrets and the noise of step ``t`` derive from
``(seed, t)`` alone) and checkpointed every ``checkpoint_every`` steps to a safetensors file (weights,
Adam's state, the history), so a killed run continues bit-identically; a checkpoint of other settings
is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import ImageSet
from ..errors import SibaError
from ..runtime import check_checkpoint_settings, load_tensors, pick_device, save_tensors, settings_digest
from .base import Attack, register_attack
from .sparse import parse_number
from .trigger import Trigger

CHECKPOINT_FORMAT = 1  # the layout of an ISSBA training checkpoint
MIN_SIZE = 16  # the smallest image side the encoder/decoder are made for
APPLY_CHUNK = 256  # images per encoder pass when a trigger is applied (bounds the memory of a large batch)


# --------------------------------------------------------------------------- networks


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


def _up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` upsampled (nearest) to the spatial size of ``like`` (any size, odd ones included)."""
    return F.interpolate(t, size=like.shape[-2:], mode="nearest")


class StegaEncoder(nn.Module):
    """StegaStamp-style encoder: ``encoder(x, secret)`` is a residual ``N×C×H×W`` for images in ``[0, 1]``.

    ``secret``: ``N×bits`` (or ``bits``, shared by the batch) of 0/1 values. ``width`` is the number
    of channels of the top level (``2·width``, ``4·width`` below). No batch norm: an image's residual
    does not depend on the rest of its batch.
    """

    def __init__(self, bits: int, height: int, width: int, channels: int = 3, base: int = 16) -> None:
        super().__init__()
        self.bits, self.height, self.width, self.channels, self.base = bits, height, width, channels, base
        self.grid = (math.ceil(height / 4), math.ceil(width / 4))
        c = base
        self.secret_dense = nn.Linear(bits, channels * self.grid[0] * self.grid[1])
        self.down1 = _conv(2 * channels, c)
        self.down2 = _conv(c, c, 2)
        self.down3 = _conv(c, 2 * c, 2)
        self.down4 = _conv(2 * c, 4 * c, 2)
        self.up3 = _conv(4 * c, 2 * c)
        self.merge3 = _conv(4 * c, 2 * c)
        self.up2 = _conv(2 * c, c)
        self.merge2 = _conv(2 * c, c)
        self.up1 = _conv(c, c)
        self.merge1 = _conv(2 * c + 2 * channels, c)
        self.residual = nn.Conv2d(c, channels, 1)

    def arch(self) -> dict[str, int]:
        """The settings that rebuild this network (saved with a trigger)."""
        return {"bits": self.bits, "height": self.height, "width": self.width, "channels": self.channels,
                "base": self.base}

    def forward(self, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if secret.dim() == 1:
            secret = secret.unsqueeze(0).expand(n, -1)
        s = F.relu(self.secret_dense(secret.to(x.dtype) - 0.5)).view(n, self.channels, *self.grid)
        s = F.interpolate(s, size=x.shape[-2:], mode="nearest")
        inp = torch.cat([x - 0.5, s], dim=1)
        d1 = self.down1(inp)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        u3 = self.merge3(torch.cat([d3, self.up3(_up(d4, d3))], dim=1))
        u2 = self.merge2(torch.cat([d2, self.up2(_up(u3, d2))], dim=1))
        u1 = self.merge1(torch.cat([d1, self.up1(_up(u2, d1)), inp], dim=1))
        return self.residual(u1)


class StegaDecoder(nn.Module):
    """Reads the secret back: ``decoder(x)`` is ``N×bits`` logits (bit ``i`` is 1 where logit ``i`` > 0)."""

    def __init__(self, bits: int, channels: int = 3, base: int = 16) -> None:
        super().__init__()
        c = base
        self.features = nn.Sequential(_conv(channels, c, 2), _conv(c, c), _conv(c, 2 * c, 2), _conv(2 * c, 2 * c),
                                      _conv(2 * c, 4 * c, 2), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 * c * 16, 256), nn.ReLU(inplace=True), nn.Linear(256, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x - 0.5))


def encode(encoder: StegaEncoder, x: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
    """The encoded (poisoned) images ``clip(x + encoder(x, secret), 0, 1)``."""
    return (x + encoder(x, secret)).clamp(0, 1)


def fixed_secret(bits: int, seed: int) -> torch.Tensor:
    """The attack's bit string: ``bits`` seeded 0/1 values (float32), the same for every image."""
    g = torch.Generator().manual_seed(_derived_seed(seed, "secret"))
    return torch.randint(0, 2, (bits,), generator=g).to(torch.float32)


def _derived_seed(seed: int, what: str | int) -> int:
    """A seed for one purpose (``"secret"``, a step number …) from the run's seed, as a 63-bit number."""
    digest = hashlib.sha256(f"siba-issba:{seed}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------- training


@dataclass
class IssbaTraining:
    """What :func:`train_issba` returns: the trained pair (on the training device, eval mode), a row of
    mean losses per ``checkpoint_every`` steps, whether LPIPS was part of the loss, and the training's
    wall time in seconds (summed over resumed runs)."""

    encoder: StegaEncoder
    decoder: StegaDecoder
    history: list[dict[str, Any]] = field(default_factory=list)
    lpips_loss: bool = False
    wall_s: float = 0.0
    resumed_at: int | None = None


def image_loss_weight(step: int, steps: int, warmup: float, ramp: float) -> float:
    """The image-loss weight at ``step`` (0-based): 0 for the first ``warmup·steps`` steps, then a
    linear ramp to 1 over ``ramp·steps`` steps (StegaStamp's schedule), then 1."""
    start, length = warmup * steps, ramp * steps
    if step < start:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / length)


def _check_int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SibaError(f"{what} must be a whole number ≥ {low}, got {value!r}")
    return value


def _check_float(value: Any, what: str, low: float, high: float | None = None, low_open: bool = False) -> float:
    """A number (or a string such as ``"1/255"``) in ``[low, high]`` (above ``low`` if ``low_open``), else an error."""
    v = parse_number(value, what)
    if low_open and v <= low:
        raise SibaError(f"{what} must be > {low:g}, got {v:g}")
    if v < low or (high is not None and v > high):
        span = f"in [{low:g}, {high:g}]" if high is not None else f"≥ {low:g}"
        raise SibaError(f"{what} must be {span}, got {v:g}")
    return v


def _images_digest(images: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([str(images.dtype), list(images.shape)]).encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_checkpoint(path: Path, state: Any, settings: dict[str, Any]) -> None:
    """Refuse a training checkpoint made with other settings: a one-line error naming the first difference."""
    redo = f"use the same settings, or delete {path} to start afresh"
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or \
            not isinstance(state.get("settings"), dict):
        raise SibaError(f"{path} is not an ISSBA training checkpoint of this siba; {redo}")
    check_checkpoint_settings(f"the ISSBA checkpoint {path}", state, settings, redo,
                              {"images": ("on other images", "fingerprint")})


def _save_checkpoint(path: Path, next_step: int, encoder: nn.Module, decoder: nn.Module,
                     opt: torch.optim.Optimizer, settings: dict[str, Any], history: list[dict[str, Any]],
                     wall_s: float) -> None:
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    tensors.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    for i, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            tensors[f"adam.{i}.{key}"] = v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
    state = {"format": CHECKPOINT_FORMAT, "settings": settings, "digest": settings_digest(settings),
             "next_step": next_step,
             "history": history, "wall_s": wall_s}
    save_tensors(path, tensors, {"siba_issba_checkpoint": state})


def _load_checkpoint(path: Path, tensors: dict[str, torch.Tensor], encoder: nn.Module, decoder: nn.Module,
                     opt: torch.optim.Optimizer) -> None:
    try:
        encoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")})
        decoder.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")})
    except RuntimeError as exc:
        raise SibaError(f"{path} does not hold this ISSBA encoder/decoder: {str(exc).splitlines()[0]}") from None
    dev = next(encoder.parameters()).device
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("adam."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v if name == "step" else v.to(dev)
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def _lpips_model(use: bool, images: torch.Tensor, device: torch.device,
                 log: Callable[[str], None] | None) -> nn.Module | None:
    """The frozen LPIPS network for the image loss, or None (with a note) when it cannot be used."""
    if not use:
        return None
    from ..metrics.lpips import MIN_SIZE as LPIPS_MIN, default_lpips

    c, h, w = images.shape[1:]
    why = None
    if c != 3:
        why = f"LPIPS needs RGB images, these have {c} channel(s)"
    elif min(h, w) < LPIPS_MIN:
        why = f"LPIPS needs images of at least {LPIPS_MIN}×{LPIPS_MIN}, these are {h}×{w}"
    else:
        try:
            return default_lpips(device)
        except SibaError as exc:
            why = str(exc)
    if log is not None:
        log(f"ISSBA: training with the L2 image loss only ({why})")
    return None


def train_issba(train_images: torch.Tensor, *, bits: int = 20, steps: int = 3000, batch_size: int = 32,
                lr: float = 1e-3, l2_weight: float = 2.0, lpips_weight: float = 1.5, warmup: float = 0.1,
                ramp: float = 0.4, base: int = 16, use_lpips: bool = True, seed: int = 0,
                device: torch.device | str = "cpu", progress: bool | None = None,
                log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None,
                checkpoint_every: int = 100, identity: dict[str, Any] | None = None) -> IssbaTraining:
    """Train a StegaStamp-style encoder/decoder pair on ``train_images`` (uint8 ``N×C×H×W``, ``H, W ≥ 16``).

    Each of the ``steps`` steps draws ``batch_size`` images and as many random secrets (seeded by
    ``(seed, step)``), and takes an Adam step (``lr``) on ``BCE(bits) + w(step)·(l2_weight·MSE +
    lpips_weight·LPIPS)`` with the weight ``w`` of :func:`image_loss_weight`. LPIPS is used when
    ``use_lpips`` and it can be (weights installed, RGB, ≥ 31×31); otherwise the L2 term alone, with a
    note to ``log``. Training is in fp32.

    ``checkpoint``: a ``.safetensors`` file written atomically every ``checkpoint_every`` steps and at
    the end, holding the two networks, Adam's state, the history, the next step and the settings that
    decide the result (those above, the device type, whether LPIPS is used, a hash of the images and
    ``identity``); when it exists the run continues from it and ends bit-identical to an uninterrupted
    run on the same machine. A file of other settings is a one-line error. The caller removes it.
    """
    if not isinstance(train_images, torch.Tensor) or train_images.dtype != torch.uint8 or train_images.dim() != 4:
        raise SibaError("ISSBA training images must be a uint8 N×C×H×W tensor")
    n, c, h, w = train_images.shape
    if n < 1:
        raise SibaError("ISSBA training needs at least one image")
    if min(h, w) < MIN_SIZE:
        raise SibaError(f"the ISSBA encoder needs images of at least {MIN_SIZE}×{MIN_SIZE}, got {h}×{w}")
    bits = _check_int(bits, "bits", 1)
    steps = _check_int(steps, "steps", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    base = _check_int(base, "base (the encoder's channel width)", 4)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
    lr = _check_float(lr, "lr", 0.0, low_open=True)
    l2_weight = _check_float(l2_weight, "l2_weight", 0.0)
    lpips_weight = _check_float(lpips_weight, "lpips_weight", 0.0)
    warmup = _check_float(warmup, "warmup", 0.0, 1.0)
    ramp = _check_float(ramp, "ramp", 0.0, 1.0)
    dev = pick_device(device)
    lp = _lpips_model(use_lpips and lpips_weight > 0, train_images, dev, log)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator left as it was
        torch.manual_seed(_derived_seed(seed, "init"))
        encoder = StegaEncoder(bits, h, w, c, base)
        decoder = StegaDecoder(bits, c, base)
    encoder, decoder = encoder.to(dev), decoder.to(dev)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=lr)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    settings = {"bits": bits, "steps": steps, "batch_size": batch_size, "lr": lr, "l2_weight": l2_weight,
                "lpips_weight": lpips_weight, "warmup": warmup, "ramp": ramp, "base": base, "seed": int(seed),
                "lpips": lp is not None, "device": dev.type, "checkpoint_every": checkpoint_every,
                "images": _images_digest(train_images)}
    settings.update({k: v for k, v in (identity or {}).items() if k not in settings})
    settings = json.loads(json.dumps(settings))
    history: list[dict[str, Any]] = []
    start, wall_before, resumed_at = 0, 0.0, None
    if ckpt is not None and ckpt.is_file():
        tensors, meta = load_tensors(ckpt)
        state = meta.get("siba_issba_checkpoint")
        _check_checkpoint(ckpt, state, settings)
        _load_checkpoint(ckpt, tensors, encoder, decoder, opt)
        start, history, wall_before = int(state["next_step"]), list(state["history"]), float(state["wall_s"])
        resumed_at = start
        if log is not None:
            log(f"ISSBA: resuming the encoder training after step {start} of {steps} ({ckpt})")
    images = train_images.to(dev)
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show and start < steps:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, desc="training ISSBA encoder", unit="step", leave=False)
    t0 = time.perf_counter()
    sums = torch.zeros(4, dtype=torch.float64)  # secret loss, l2, lpips, bit accuracy since the last row
    counted = 0
    encoder.train()
    decoder.train()
    try:
        for step in range(start, steps):
            g = torch.Generator().manual_seed(_derived_seed(seed, step))
            idx = torch.randint(n, (batch_size,), generator=g)
            secret = torch.randint(0, 2, (batch_size, bits), generator=g).to(dev, torch.float32)
            noise = ((torch.rand(batch_size, c, h, w, generator=g) - 0.5) / 255).to(dev)
            x = images[idx.to(dev)].float().div_(255)
            enc = encode(encoder, x, secret)
            logits = decoder((enc + noise).clamp(0, 1))
            loss_secret = F.binary_cross_entropy_with_logits(logits, secret)
            loss_l2 = (enc - x).pow(2).mean()
            weight = image_loss_weight(step, steps, warmup, ramp)
            loss = loss_secret + weight * l2_weight * loss_l2
            loss_lp = torch.zeros((), device=dev)
            if lp is not None and weight > 0:
                loss_lp = lp(enc, x).mean()
                loss = loss + weight * lpips_weight * loss_lp
            if not bool(torch.isfinite(loss)):
                raise SibaError(f"ISSBA training failed at step {step + 1}: the loss is not finite "
                                "(try a smaller lr); no trigger was made")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc = ((logits.detach() > 0).float() == secret).float().mean()
            sums += torch.stack([loss_secret.detach(), loss_l2.detach(), loss_lp.detach(), acc]).double().cpu()
            counted += 1
            if bar is not None:
                bar.update()
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                mean = (sums / counted).tolist()
                row = {"step": step + 1, "image_weight": weight, "secret_loss": mean[0], "l2": mean[1],
                       "psnr": 10 * math.log10(1 / mean[1]) if mean[1] > 0 else None,
                       "lpips": mean[2] if lp is not None and weight > 0 else None, "bit_accuracy": mean[3]}
                history.append(row)
                sums.zero_()
                counted = 0
                if bar is not None:
                    bar.set_postfix(bits=f"{mean[3]:.3f}", psnr=f"{row['psnr'] or 0:.1f}")
                if log is not None:
                    log(f"ISSBA step {step + 1}/{steps}  bit loss {mean[0]:.4f}  batch bit accuracy {mean[3]:.4f}  "
                        f"PSNR {row['psnr'] or float('inf'):.2f} dB  image weight {weight:.2f}")
                if ckpt is not None:
                    _save_checkpoint(ckpt, step + 1, encoder, decoder, opt, settings, history,
                                     wall_before + time.perf_counter() - t0)
    finally:
        if bar is not None:
            bar.close()
    encoder.eval()
    decoder.eval()
    return IssbaTraining(encoder, decoder, history, lp is not None, wall_before + time.perf_counter() - t0,
                         resumed_at)


@torch.no_grad()
def evaluate_issba(encoder: StegaEncoder, decoder: StegaDecoder, images: torch.Tensor, secret: torch.Tensor, *,
                   seed: int = 0, batch_size: int = APPLY_CHUNK, lpips: bool = True) -> dict[str, Any]:
    """How well the pair hides ``secret`` in ``images`` (uint8 ``N×C×H×W``, best: images it was not trained on).

    ``bit_accuracy``: the share of the secret's bits the decoder reads back from the encoded images;
    ``bit_accuracy_8bit``: the same from the encoded images rounded to 8 bits (as a poisoned set is
    released); ``bit_accuracy_random``: from images encoded with random secrets (seeded by ``seed``);
    ``psnr`` (dB) and ``lpips`` (AlexNet, None where it cannot be computed): mean over the images, of
    the encoded against the clean ones.
    """
    encoder.eval()
    decoder.eval()
    dev = next(encoder.parameters()).device
    lp = None
    if lpips and images.shape[1] == 3:
        from ..metrics.lpips import MIN_SIZE as LPIPS_MIN, default_lpips

        if min(images.shape[2:]) >= LPIPS_MIN:
            try:
                lp = default_lpips(dev)
            except SibaError:
                lp = None
    from ..metrics.stealth import psnr

    g = torch.Generator().manual_seed(_derived_seed(seed, "evaluate"))
    secret = secret.to(dev, torch.float32)
    hits = hits8 = hits_rand = 0.0
    psnr_sum = lp_sum = 0.0
    n = images.shape[0]
    for i in range(0, n, batch_size):
        x = images[i:i + batch_size].to(dev).float().div_(255)
        enc = encode(encoder, x, secret)
        hits += float(((decoder(enc) > 0).float() == secret).float().sum())
        enc8 = (enc * 255).round() / 255
        hits8 += float(((decoder(enc8) > 0).float() == secret).float().sum())
        rand = torch.randint(0, 2, (x.shape[0], secret.numel()), generator=g).to(dev, torch.float32)
        hits_rand += float(((decoder(encode(encoder, x, rand)) > 0).float() == rand).float().sum())
        psnr_sum += float(psnr(x, enc).sum())
        if lp is not None:
            lp_sum += float(lp(enc, x).sum())
    total = max(1, n * secret.numel())
    return {"bit_accuracy": hits / total, "bit_accuracy_8bit": hits8 / total, "bit_accuracy_random": hits_rand / total,
            "psnr": psnr_sum / max(1, n), "lpips": lp_sum / max(1, n) if lp is not None else None, "images": n}


# --------------------------------------------------------------------------- the trigger


class EncoderTrigger(Trigger):
    """ISSBA's trigger: ``clip(x + encoder(x, secret), 0, 1)`` with a frozen trained encoder and a fixed secret.

    Holds the encoder's weights as tensors (``encoder.<name>``), the secret (``secret``, 0/1 float32) and
    the encoder's architecture (``arch``: bits, height, width, channels, base); it builds the network on
    the device of the batch it is applied to (eval mode, no gradients). Not additive: it has no ``k``
    or ``ε`` budget, each image gets its own change.
    """

    kind = "encoder"

    def __init__(self, weights: dict[str, torch.Tensor], secret: torch.Tensor, *, arch: dict[str, int],
                 num_classes: int, target: int | None = 0, target_rule: str = "all-to-one",
                 meta: dict[str, Any] | None = None, label_seed: int = 0) -> None:
        super().__init__(num_classes=num_classes, target=target, target_rule=target_rule, meta=meta,
                         label_seed=label_seed)
        keys = ("bits", "height", "width", "channels", "base")
        if not isinstance(arch, dict) or any(not isinstance(arch.get(k), int) for k in keys):
            raise SibaError(f"an encoder trigger's arch must give {', '.join(keys)} as whole numbers, got {arch!r}")
        self.arch = {k: int(arch[k]) for k in keys}
        secret = torch.as_tensor(secret).to(torch.float32).reshape(-1)
        if secret.numel() != self.arch["bits"] or not bool(((secret == 0) | (secret == 1)).all()):
            raise SibaError(f"an encoder trigger's secret must be {self.arch['bits']} bits of 0 or 1")
        self.secret = secret
        self.weights = {k: v.detach().to(torch.float32) for k, v in weights.items()}
        self._net: StegaEncoder | None = None
        self._net_device: torch.device | None = None
        self._build(torch.device("cpu"))  # checks that the weights fit the architecture

    def _build(self, device: torch.device) -> StegaEncoder:
        if self._net is None or self._net_device != device:
            a = self.arch
            net = StegaEncoder(a["bits"], a["height"], a["width"], a["channels"], a["base"])
            try:
                net.load_state_dict(self.weights)
            except RuntimeError as exc:
                raise SibaError(f"the encoder trigger's weights do not fit its architecture: "
                                f"{str(exc).splitlines()[0]}") from None
            self._net = net.to(device).eval().requires_grad_(False)
            self._net_device = device
        return self._net

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.arch["channels"], self.arch["height"], self.arch["width"])

    def encoder(self, device: torch.device | str = "cpu") -> StegaEncoder:
        """The frozen encoder network on ``device`` (eval mode)."""
        return self._build(torch.device(device))

    def to(self, device: torch.device | str) -> "EncoderTrigger":
        self.weights = {k: v.to(device) for k, v in self.weights.items()}
        self.secret = self.secret.to(device)
        return self

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``clip(x + encoder(x, secret), 0, 1)`` for a float batch, on its device, ``APPLY_CHUNK`` images at a time."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise SibaError(f"the encoder trigger is for {self.shape[0]}×{self.shape[1]}×{self.shape[2]} images, "
                            f"got a batch of shape {tuple(x.shape)}")
        net = self._build(x.device)
        secret = self.secret.to(x.device)
        with torch.no_grad():
            parts = [encode(net, x[i:i + APPLY_CHUNK].float(), secret) for i in range(0, x.shape[0], APPLY_CHUNK)]
        out = torch.cat(parts) if parts else x.float().clone()
        return out.to(x.dtype)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"secret": self.secret, **{f"encoder.{k}": v for k, v in self.weights.items()}}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"arch": dict(self.arch), "secret_bits": "".join(str(int(b)) for b in self.secret.tolist())})
        return d

    @classmethod
    def _from_saved(cls, tensors: dict[str, torch.Tensor], desc: dict[str, Any]) -> "EncoderTrigger":
        weights = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
        return cls(weights, tensors["secret"], arch=desc["arch"], **cls._rule_of(desc),
                   meta=cls._meta_of(desc, ("arch", "secret_bits")))


# --------------------------------------------------------------------------- the attack


@register_attack
class ISSBA(Attack):
    """ISSBA: each poisoned image carries a fixed secret hidden by a trained StegaStamp-style encoder."""

    name = "issba"
    description = "sample-specific invisible trigger: a trained encoder hides a fixed bit string in each image"

    def __init__(self, *, bits: int = 20, steps: int = 3000, batch_size: int = 32, lr: float | str = 1e-3,
                 max_images: int = 4000, holdout: int = 500, l2_weight: float | str = 2.0,
                 lpips_weight: float | str = 1.5, warmup: float | str = 0.1, ramp: float | str = 0.4,
                 base: int = 16, target: int = 0, all_to_all: bool = False, seed: int = 0) -> None:
        super().__init__(target=target, all_to_all=all_to_all, seed=seed)
        self.bits = _check_int(bits, "bits (the length of the hidden secret)", 1)
        self.steps = _check_int(steps, "steps (encoder training steps)", 1)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.lr = _check_float(lr, "lr", 0.0, low_open=True)
        self.max_images = _check_int(max_images, "max_images (images the encoder is trained on)", 1)
        self.holdout = _check_int(holdout, "holdout (images kept out of training to measure the encoder)", 1)
        self.l2_weight = _check_float(l2_weight, "l2_weight", 0.0)
        self.lpips_weight = _check_float(lpips_weight, "lpips_weight", 0.0)
        self.warmup = _check_float(warmup, "warmup (share of the steps without the image loss)", 0.0, 1.0)
        self.ramp = _check_float(ramp, "ramp (share of the steps over which the image loss ramps up)", 0.0, 1.0)
        if self.warmup + self.ramp > 1:
            raise SibaError(f"warmup + ramp must be at most 1 (shares of the steps), got {self.warmup + self.ramp:g}")
        self.base = _check_int(base, "base (the encoder's channel width)", 4)

    def validate(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().validate(image_shape, num_classes)
        if min(image_shape[1:]) < MIN_SIZE:
            raise SibaError(f"the ISSBA encoder needs images of at least {MIN_SIZE}×{MIN_SIZE}, got "
                            f"{image_shape[1]}×{image_shape[2]}")

    def split(self, train_set: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        """The indices (sorted) of the held-out images and of the training images, from a seeded permutation:
        the first ``holdout`` are held out, the next ``max_images`` (or all the rest) train the encoder."""
        n = len(train_set)
        if n <= self.holdout:
            raise SibaError(f"ISSBA holds {self.holdout} images out of the encoder's training, but the training set "
                            f"has only {n}; lower holdout")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_derived_seed(self.seed, "split")))
        held = perm[:self.holdout].sort().values
        used = perm[self.holdout:self.holdout + self.max_images].sort().values
        return held, used

    def generate(self, train_set: ImageSet, surrogate: nn.Module | None = None, *,
                 device: torch.device | str = "cpu", progress: bool | None = None,
                 log: Callable[[str], None] | None = None, checkpoint: str | Path | None = None) -> EncoderTrigger:
        """Train the encoder/decoder (or continue from ``checkpoint``), and return the trigger with its
        held-out bit accuracy, PSNR, LPIPS and wall time in its meta. No surrogate is used."""
        self.check_data(train_set, surrogate)
        t0 = time.perf_counter()
        held, used = self.split(train_set)
        res = train_issba(train_set.images[used], bits=self.bits, steps=self.steps, batch_size=self.batch_size,
                          lr=self.lr, l2_weight=self.l2_weight, lpips_weight=self.lpips_weight, warmup=self.warmup,
                          ramp=self.ramp, base=self.base, seed=self.seed, device=device, progress=progress, log=log,
                          checkpoint=checkpoint, identity={"attack": self.name})
        secret = fixed_secret(self.bits, self.seed)
        stats = evaluate_issba(res.encoder, res.decoder, train_set.images[held], secret, seed=self.seed)
        if log is not None:
            lp = "n/a" if stats["lpips"] is None else f"{stats['lpips']:.4f}"
            log(f"ISSBA encoder on {stats['images']} held-out images: bit accuracy {stats['bit_accuracy']:.4f} "
                f"(8-bit {stats['bit_accuracy_8bit']:.4f}, random secrets {stats['bit_accuracy_random']:.4f}), "
                f"PSNR {stats['psnr']:.2f} dB, LPIPS {lp}")
        weights = {k: v.detach().cpu() for k, v in res.encoder.state_dict().items()}
        meta = self._meta(heldout=stats, train_images=int(used.numel()), lpips_loss=res.lpips_loss,
                          train_wall_s=round(res.wall_s, 2), wall_s=round(time.perf_counter() - t0, 2),
                          history=res.history)
        return EncoderTrigger(weights, secret, arch=res.encoder.arch(), num_classes=train_set.num_classes,
                              target=self.target, target_rule=self.target_rule, meta=meta)
