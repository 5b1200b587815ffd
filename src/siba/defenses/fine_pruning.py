"""Fine-Pruning (Liu, Dolan-Gavitt & Garg, RAID 2018): prune the last convolutional layer's channels
that clean inputs leave dormant, then fine-tune on clean data.

1. *Rank.* The mean activation of each channel of the model's last convolutional stage (the output
   of ``model.feature_layer()``, after its activation: FastNet ``block3``, ResNet ``layer4``, VGG
   ``features``; the last convolution's own output for a model without ``feature_layer``) over the
   clean validation images and all positions. The clean validation subset comes from the
   **training** set: the test set is never used to decide anything.
2. *Prune.* Channels are pruned in increasing order of that activation. Pruning channel ``k``
   zeroes the output of the last convolution's batch norm for ``k`` (a mask on that output while
   fine-tuning, so the channel stays pruned; at the end the mask is written into the weights —
   the convolution's output channel and the batch norm's weight and bias set to 0 — which gives
   the same function, so the repaired model is an ordinary model that saves and loads). For
   FastNet and VGG this zeroes the channel of the stage's output (GELU(0) = ReLU(0) = 0); in a
   ResNet the block's shortcut still carries the channel, as in any pruning of ``layer4``'s last
   convolution.
3. *Curve.* After each step of a grid (``steps`` equal steps of the channel count, 0% to
   ``(steps−1)/steps``), BA and ASR on the test set and the accuracy on the clean validation
   subset are recorded (the paper's Figure 9: accuracy and attack success against pruned
   channels).
4. *Choose.* ``ratio`` prunes that share of the channels; by default (``ratio: null``) the largest
   grid step whose clean **validation** accuracy stays within ``max_acc_drop`` (0.05) of the
   unpruned model's — the paper's rule of pruning until the clean accuracy falls by a set margin,
   decided on the defender's data.
5. *Fine-tune* the pruned model on the clean validation subset with the project's one trainer
   (:func:`siba.training.train`; ``finetune_epochs`` 5, constant ``finetune_lr`` 0.01, SGD with
   momentum 0.9, random crop and flip), the pruned channels masked throughout; ``finetune_epochs:
   0`` is pruning alone.

The result: ``metrics`` (``ba_before``, ``asr_before``, ``ba_after``, ``asr_after``; after =
pruned and fine-tuned), the BA/ASR right after pruning, the curve, the pruned channels; the
repaired model as ``<out_dir>/model.safetensors`` (``artifacts['model']`` in Python); figure
``fine-pruning.png``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import SibaError
from .base import (DefenseInput, RepairDefense, attack_metrics, check_float, check_int, last_conv_and_norm,
                   predict_logits, progress_bar, register_defense)
from .figures import curves


@register_defense
class FinePruning(RepairDefense):
    """Fine-Pruning: prune dormant last-layer channels (ranked on clean data), then fine-tune."""

    name = "fine-pruning"
    description = "prune the last conv layer's least active channels on clean data, then fine-tune (Liu et al. 2018)"

    def __init__(self, *, steps: int = 20, ratio: float | None = None, max_acc_drop: float = 0.05,
                 finetune_epochs: int = 5, finetune_lr: float = 0.01, finetune_batch_size: int = 128,
                 batch_size: int = 512, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.steps = check_int(steps, "steps", 1)
        self.ratio = None if ratio is None else check_float(ratio, "ratio (the share of channels pruned)", 0, 1,
                                                            high_open=True)
        self.max_acc_drop = check_float(max_acc_drop, "max_acc_drop", 0, 1)
        self.finetune_epochs = check_int(finetune_epochs, "finetune_epochs", 0)
        self.finetune_lr = check_float(finetune_lr, "finetune_lr", 0, low_open=True)
        self.finetune_batch_size = check_int(finetune_batch_size, "finetune_batch_size", 1)
        self.batch_size = check_int(batch_size, "batch_size", 1)

    # ------------------------------------------------------------------ pieces
    @staticmethod
    @torch.no_grad()
    def channel_activations(model: nn.Module, images: torch.Tensor, device: torch.device, channels: int,
                            fallback: nn.Module, batch_size: int = 512) -> tuple[torch.Tensor, str]:
        """Mean activation of each of the last stage's ``channels`` over ``images`` and positions: at
        ``model.feature_layer()``'s output when it has ``channels`` channels, else at ``fallback``'s."""
        places: list[tuple[nn.Module, str]] = []
        feat = getattr(model, "feature_layer", None)
        if callable(feat):
            try:
                places.append((feat(), "feature_layer() output"))
            except NotImplementedError:
                pass
        places.append((fallback, "last convolution's output"))
        for layer, where in places:
            mean = _mean_channels(model, layer, images, device, batch_size)
            if mean.numel() == channels:
                return mean, where
        raise SibaError(f"no layer to rank the last convolution's {channels} channels by")

    @staticmethod
    def mask_hook(module: nn.Module, mask: torch.Tensor) -> Any:
        """Multiply ``module``'s output by ``mask`` (one value per channel); returns the hook's handle."""
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
            return out * mask.to(out.device, out.dtype).view(1, -1, 1, 1)

        return module.register_forward_hook(hook)

    @staticmethod
    @torch.no_grad()
    def bake(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, pruned: torch.Tensor) -> None:
        """Write the pruning into the weights: output channels ``pruned`` of ``conv`` (and ``bn``) give 0."""
        if pruned.numel() == 0:
            return
        conv.weight[pruned] = 0
        if conv.bias is not None:
            conv.bias[pruned] = 0
        if bn is not None:
            if bn.weight is not None:
                bn.weight[pruned] = 0
            if bn.bias is not None:
                bn.bias[pruned] = 0

    # ------------------------------------------------------------------ the defense
    def _run(self, inputs: DefenseInput, model: nn.Module, device: torch.device, out: Path,
             progress: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
        from ..training import TrainConfig, train

        assert inputs.clean_val is not None
        val, test, mark = inputs.clean_val, inputs.test_set, inputs.trigger
        net = copy.deepcopy(model).to(device).eval()
        conv_name, conv, bn_name, bn = last_conv_and_norm(net)
        target_module = bn if bn is not None else conv
        channels = int(conv.out_channels)
        act, where = self.channel_activations(net, val.images, device, channels, conv, self.batch_size)
        order = torch.argsort(act, stable=True)  # least active first
        mask = torch.ones(channels)
        handle = self.mask_hook(target_module, mask)

        def val_acc() -> float:
            pred = predict_logits(net, val.images, device, self.batch_size).argmax(1)
            return float((pred == val.labels).float().mean())

        counts = sorted({int(round(i * channels / self.steps)) for i in range(self.steps)})
        if self.ratio is not None:
            counts = sorted(set(counts) | {int(round(self.ratio * channels))})
        curve: list[dict[str, Any]] = []
        bar = progress_bar(len(counts), "fine-pruning: pruning", progress, "step")
        try:
            for n in counts:
                mask.fill_(1)
                mask[order[:n]] = 0
                row = {"pruned": n, "ratio": n / channels, **attack_metrics(net, test, mark, device, self.batch_size),
                       "val_acc": val_acc()}
                curve.append(row)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        before = curve[0]
        if self.ratio is not None:
            chosen = int(round(self.ratio * channels))
            rule = f"ratio {self.ratio:g}"
        else:
            ok = [r["pruned"] for r in curve if r["val_acc"] >= before["val_acc"] - self.max_acc_drop - 1e-12]
            chosen = max(ok)
            rule = f"largest grid step with clean validation accuracy within {self.max_acc_drop:g} of unpruned"
        pruned_row = next(r for r in curve if r["pruned"] == chosen)
        mask.fill_(1)
        pruned = order[:chosen].clone()
        mask[pruned] = 0
        log(f"fine-pruning: pruning {chosen} of {channels} channels of {conv_name} ({rule})")
        history: list[dict[str, Any]] = []
        if self.finetune_epochs > 0:
            cfg = TrainConfig(epochs=self.finetune_epochs, lr=self.finetune_lr, batch_size=self.finetune_batch_size,
                              schedule="constant", seed=self.seed, eval_every=0)
            res = train(net, val, None, cfg, device=device, progress=progress, log=log)
            history = res.history
        net.eval()
        handle.remove()
        self.bake(conv, bn, pruned)
        net = net.to(memory_format=torch.contiguous_format)
        after = attack_metrics(net, test, mark, device, self.batch_size)
        after["val_acc"] = val_acc()
        self.artifacts["model"] = net
        saved = None
        if getattr(net, "siba_spec", None) is not None:
            from ..models import save_model

            save_model(net, out / "model.safetensors", defense=self.name, pruned_layer=conv_name,
                       pruned_channels=pruned.tolist())
            saved = "model.safetensors"
        metrics = self.repair_metrics(before, after)
        metrics.update({"pruned_channels": chosen, "channels": channels, "pruned_ratio": chosen / channels})
        fig = curves(out / "fine-pruning.png", [r["pruned"] for r in curve],
                     {"BA (test)": [r["ba"] for r in curve], "ASR (test)": [r.get("asr") for r in curve],
                      "val acc (clean validation)": [r["val_acc"] for r in curve]},
                     xlabel=f"channels pruned of {channels} ({conv_name})", ylabel="rate",
                     title="Fine-Pruning", vline=(chosen, "pruned for fine-tuning"),
                     marks={"BA after fine-tuning": (chosen, after["ba"]),
                            "ASR after fine-tuning": (chosen, after.get("asr"))} if self.finetune_epochs else None)
        return {"metrics": metrics, "figures": [fig], "model_file": saved,
                "layer": {"conv": conv_name, "batch_norm": bn_name, "ranked_by": where},
                "choice": rule, "after_pruning": {k: pruned_row.get(k) for k in ("ba", "asr", "val_acc")},
                "after_finetuning": after, "pruned": pruned.tolist(), "curve": curve,
                "finetune": {"epochs": self.finetune_epochs, "lr": self.finetune_lr, "images": len(val),
                             "history": history}}


@torch.no_grad()
def _mean_channels(model: nn.Module, layer: nn.Module, images: torch.Tensor, device: torch.device,
                   batch_size: int) -> torch.Tensor:
    """The mean over images and positions of each channel of ``layer``'s output (CPU)."""
    sums: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: sums.append(o.float().mean((2, 3)).sum(0).cpu()))
    try:
        predict_logits(model, images, device, batch_size)
    finally:
        handle.remove()
    return torch.stack(sums).sum(0) / max(1, images.shape[0])
