"""ABL — Anti-Backdoor Learning (Li, Lyu, Koren, Lyu, Li & Ma, NeurIPS 2021): train a clean model
on a poisoned training set by isolating the samples it learns too easily, then unlearning them.

A training-time defense: it never changes the victim. It trains a **fresh** model of the victim's
architecture (:func:`siba.models.model_spec` of ``inputs.model``) on ``inputs.poisoned_train``,
every phase through the project's one trainer (:func:`siba.training.train`, with its loss hook):

1. *Isolation* — ``isolation_epochs`` (the paper's 20) from scratch with the local gradient ascent
   (LGA) loss, ``γ`` = ``gamma`` (0.5). With ``lga: sample`` (the default, as the paper writes it)
   each sample's cross-entropy ``ℓᵢ`` becomes ``sign(ℓᵢ − γ)·ℓᵢ`` and the batch's loss is their
   mean: a sample whose loss has fallen below ``γ`` is pushed back up, so clean samples hover
   around ``γ`` while backdoor samples, learned far faster, escape below it. With ``lga: batch``
   the rule is applied to the batch's mean, ``sign(ℓ̄ − γ)·ℓ̄`` — what the official ABL code and
   BackdoorBench compute. The result JSON says which was used (``lga``).
2. *Ranking* — every training sample's cross-entropy under the isolation model (eval mode, no
   augmentation, against the labels of the poisoned set); the ``isolation_ratio`` (1%) with the
   lowest loss are the suspected poisons.
3. *Fine-tuning* — the isolation model continues on the other samples with the plain
   cross-entropy for ``finetune_epochs`` (the official code's 60 "fine-tuning the ascent model"
   epochs), ``finetune_schedule`` (step: lr ÷ 10 at 60% and 90%).
4. *Unlearning* — gradient ascent on the isolated samples: the loss ``−CE`` on them, at a small
   constant ``unlearning_lr`` (5e-4, as ABL), in batches of ``unlearning_batch_size`` (64), for
   ``unlearning_epochs`` epochs over the isolated set (80 by default, following the paper; the
   official code's own default is 20, after its 60 fine-tuning epochs).

Each phase trains into its own sub-folder of ``out_dir`` (``isolation/``, ``finetune/``,
``unlearning/``) with ``resume=True``, so running ABL again after it was killed continues where it
stopped (and a finished phase is not trained again). Every phase passes the trainer a loss hook
whose identity its checkpoint records: the isolation's names the LGA rule and ``γ``
(``abl-lga/sample/gamma=0.5``); the fine-tuning's (the mean cross-entropy, computed exactly as the
trainer's own) and the unlearning's (``−CE``) name the digest of the weights the phase started
from (``abl-finetune/ce/start=<digest>``). So a checkpoint made with another ``gamma`` or
``lga``, or after an earlier phase that trained differently (more isolation epochs, another
isolation), is refused with a one-line error instead of being silently continued.

Presets: ``preset: paper`` (default) — 20 isolation, 60 fine-tuning, 80 unlearning epochs,
``unlearning_lr`` 5e-4; ``preset: cpu`` — 5, 5 and 5 epochs with ``unlearning_lr`` 2e-3 (a quarter
of the official code's 20 unlearning epochs, at four times its rate, so that the ascent moves the
weights about as far). A preset only fills those four settings where they are not given
explicitly; every other setting has one default.

The result (``result.json``): ``metrics`` — BA and ASR of the undefended victim (``ba_before``,
``asr_before``), of the isolation-phase model (``ba_isolation``, ``asr_isolation``), after
fine-tuning (``ba_finetune``, ``asr_finetune``) and after unlearning (``ba_after``, ``asr_after``:
ABL's model), all on the test set with the trigger's labelling rule; and, when the ground truth
``poisoned_indices`` is given (used for nothing but this report), how many of the isolated samples
were really poisoned: ``isolation_precision`` (poisoned ∩ isolated / isolated) and
``isolation_recall`` (poisoned ∩ isolated / poisoned). ABL's model is ``<out_dir>/model.safetensors``
(``artifacts['model']``), the isolated indices are in the result and ``artifacts['isolated']``, and
``abl-isolation-loss.png`` shows the isolation losses of clean and poisoned samples (log scale) with
the isolation cut-off.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SibaError
from .base import (Defense, DefenseInput, attack_metrics, check_bool, check_choice, check_float, check_int,
                   predict_logits, register_defense)
from .figures import COLOURS, save_figure

PRESETS: dict[str, dict[str, int | float]] = {
    "paper": {"isolation_epochs": 20, "finetune_epochs": 60, "unlearning_epochs": 80, "unlearning_lr": 5e-4},
    "cpu": {"isolation_epochs": 5, "finetune_epochs": 5, "unlearning_epochs": 5, "unlearning_lr": 2e-3},
}
LGA_MODES = ("sample", "batch")
SCHEDULES = ("step", "onecycle", "constant")
FIGURE = "abl-isolation-loss.png"


def lga_loss(losses: torch.Tensor, gamma: float, mode: str = "sample") -> torch.Tensor:
    """ABL's local gradient ascent loss of a batch from its per-sample cross-entropies ``losses``.

    ``sample``: the mean of ``sign(ℓᵢ − γ)·ℓᵢ`` (each sample below ``γ`` ascends on its own);
    ``batch``: ``sign(ℓ̄ − γ)·ℓ̄`` of the batch mean ``ℓ̄`` (the official code's and BackdoorBench's).
    """
    if mode == "sample":
        return (torch.sign(losses - gamma) * losses).mean()
    if mode == "batch":
        mean = losses.mean()
        return torch.sign(mean - gamma) * mean
    raise SibaError(f"unknown lga {mode!r} (use {', '.join(LGA_MODES)})")


class LGAHook:
    """The isolation phase's loss hook for :func:`siba.training.train`: :func:`lga_loss` of the
    batch's cross-entropies. ``id`` names it and its settings for the trainer's checkpoint."""

    def __init__(self, gamma: float, mode: str) -> None:
        self.gamma, self.mode = float(gamma), mode
        self.id = f"abl-lga/{mode}/gamma={self.gamma!r}"

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return lga_loss(F.cross_entropy(logits, y, reduction="none"), self.gamma, self.mode)


def finetune_loss(logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
    """The fine-tuning phase's loss hook: the plain mean cross-entropy (as the trainer computes it)."""
    return F.cross_entropy(logits, y)


def unlearning_loss(logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
    """The unlearning phase's loss hook: ``−CE``, so that minimising it maximises the isolated samples' loss."""
    return -F.cross_entropy(logits, y)


@torch.no_grad()
def weights_digest(model: nn.Module) -> str:
    """A 16-hex SHA-256 of ``model``'s state (names, dtypes, shapes and values; not the memory layout)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def isolation_count(n: int, ratio: float) -> int:
    """How many of ``n`` samples ``ratio`` isolates: ``⌊ratio·n⌋`` (computed so that 0.01·50000 is 500)."""
    return int(math.floor(ratio * n + 1e-9))


@register_defense
class ABL(Defense):
    """Anti-Backdoor Learning: isolate the lowest-loss samples under LGA training, fine-tune on the rest,
    unlearn the isolated ones by gradient ascent (a fresh model of the victim's architecture)."""

    name = "abl"
    kind = "training"
    description = ("train a fresh model with local gradient ascent, isolate the lowest-loss 1%, fine-tune on "
                   "the rest and unlearn the isolated (Li et al. 2021)")

    def __init__(self, *, preset: str = "paper", isolation_epochs: int | None = None, isolation_ratio: float = 0.01,
                 gamma: float = 0.5, lga: str = "sample", finetune_epochs: int | None = None,
                 unlearning_epochs: int | None = None, lr: float = 0.1, finetune_schedule: str = "step",
                 unlearning_lr: float | None = None, batch_size: int = 128, unlearning_batch_size: int = 64,
                 momentum: float = 0.9, weight_decay: float = 1e-4, crop_pad: int = 4, flip: bool = True,
                 precision: str = "auto", eval_batch_size: int = 512, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.preset = check_choice(preset, "preset", tuple(PRESETS))
        base = PRESETS[self.preset]
        self.isolation_epochs = check_int(base["isolation_epochs"] if isolation_epochs is None else isolation_epochs,
                                          "isolation_epochs", 1)
        self.isolation_ratio = check_float(isolation_ratio, "isolation_ratio (the share of samples isolated)", 0, 1,
                                           low_open=True, high_open=True)
        self.gamma = check_float(gamma, "gamma (the LGA loss threshold)", 0, low_open=True)
        self.lga = check_choice(lga, "lga", LGA_MODES)
        self.finetune_epochs = check_int(base["finetune_epochs"] if finetune_epochs is None else finetune_epochs,
                                         "finetune_epochs", 0)
        self.unlearning_epochs = check_int(
            base["unlearning_epochs"] if unlearning_epochs is None else unlearning_epochs, "unlearning_epochs", 0)
        self.lr = check_float(lr, "lr", 0, low_open=True)
        self.finetune_schedule = check_choice(finetune_schedule, "finetune_schedule", SCHEDULES)
        self.unlearning_lr = check_float(base["unlearning_lr"] if unlearning_lr is None else unlearning_lr,
                                         "unlearning_lr", 0, low_open=True)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.unlearning_batch_size = check_int(unlearning_batch_size, "unlearning_batch_size", 1)
        self.momentum = check_float(momentum, "momentum", 0, 1, high_open=True)
        self.weight_decay = check_float(weight_decay, "weight_decay", 0)
        self.crop_pad = check_int(crop_pad, "crop_pad", 0, 256)
        self.flip = check_bool(flip, "flip")
        self.precision = check_choice(precision, "precision", ("auto", "bf16", "fp32"))
        self.eval_batch_size = check_int(eval_batch_size, "eval_batch_size", 1)

    # ------------------------------------------------------------------ checks
    def check_inputs(self, inputs: DefenseInput) -> None:
        """The shared checks, then ABL's own: a poisoned training set to train on, a model made by
        :func:`siba.models.create_model` (its architecture is reused), and something to isolate."""
        super().check_inputs(inputs)
        from ..models import model_spec

        data = inputs.poisoned_train
        if data is None:
            raise SibaError("abl needs the poisoned training set it defends (DefenseInput.poisoned_train)")
        model_spec(inputs.model)  # a one-line error for a model whose architecture is unknown
        k = isolation_count(len(data), self.isolation_ratio)
        if k < 1:
            raise SibaError(f"isolation_ratio {self.isolation_ratio:g} of {len(data):,} training images isolates no "
                            "sample; raise it")
        if k >= len(data) and self.finetune_epochs > 0:
            raise SibaError(f"isolation_ratio {self.isolation_ratio:g} isolates every training image, leaving none "
                            "to fine-tune on")

    # ------------------------------------------------------------------ pieces
    def _config(self, **kw: Any):
        from ..training import TrainConfig

        base = {"lr": self.lr, "batch_size": self.batch_size, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "crop_pad": self.crop_pad, "flip": self.flip,
                "precision": self.precision, "seed": self.seed, "eval_every": 0,
                "eval_batch_size": self.eval_batch_size}
        return TrainConfig(**{**base, **kw})

    @torch.no_grad()
    def sample_losses(self, model: nn.Module, data: Any, device: torch.device) -> torch.Tensor:
        """Each sample's cross-entropy (float64, CPU) under ``model`` in eval mode, without augmentation."""
        was = model.training
        model.eval()
        try:
            logits = predict_logits(model, data.images, device, self.eval_batch_size)
        finally:
            model.train(was)
        return F.cross_entropy(logits, data.labels, reduction="none").double()

    @staticmethod
    def isolate(losses: torch.Tensor, count: int) -> torch.Tensor:
        """The indices (ascending) of the ``count`` lowest losses (ties: the lower index first)."""
        order = torch.argsort(losses, stable=True)
        return order[:count].sort().values

    @staticmethod
    def isolation_report(isolated: torch.Tensor, poisoned: torch.Tensor | None, n: int) -> dict[str, Any]:
        """Precision and recall of the isolated set against the ground-truth ``poisoned`` indices."""
        if poisoned is None:
            return {"isolation_precision": None, "isolation_recall": None, "isolated_poisoned": None,
                    "poisoned_total": None, "poison_rate": None}
        truth = torch.zeros(n, dtype=torch.bool)
        truth[torch.as_tensor(poisoned, dtype=torch.long).flatten()] = True
        hits = int(truth[isolated].sum())
        total = int(truth.sum())
        return {"isolation_precision": hits / max(1, isolated.numel()),
                "isolation_recall": hits / total if total else None,
                "isolated_poisoned": hits, "poisoned_total": total, "poison_rate": total / n}

    @staticmethod
    def loss_figure(path: Path, losses: torch.Tensor, poisoned: torch.Tensor | None, cutoff: float) -> str:
        """Histograms (log-spaced bins, log x axis) of the isolation losses of clean and poisoned samples,
        with a dashed line at the isolation cut-off."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        floor = 1e-8  # a float32 cross-entropy can round to 0; the log axis starts here
        values = losses.double().clamp_min(floor)
        if poisoned is not None:
            truth = torch.zeros(values.numel(), dtype=torch.bool)
            truth[torch.as_tensor(poisoned, dtype=torch.long).flatten()] = True
            groups = {"clean": values[~truth], "poisoned": values[truth]}
        else:
            groups = {"all samples": values}
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            lo, hi = lo / 2, hi * 2
        edges = torch.logspace(math.log10(lo), math.log10(hi), 51).tolist()
        fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for name, v in groups.items():
            if v.numel():
                ax.hist(v.numpy(), bins=edges, alpha=0.55, label=f"{name} (n={v.numel()})",
                        color=COLOURS.get(name, COLOURS["other"]))
        ax.axvline(max(cutoff, floor), color="black", linestyle="--", linewidth=1,
                   label=f"isolation cut-off ({cutoff:.3g})")
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        if hi / lo < 1e3:  # a few decades: label 2× and 5× too; over a wide range the decades suffice
            ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            ax.xaxis.set_minor_formatter(plain)
        else:
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("cross-entropy under the isolation model (log scale)")
        ax.set_ylabel("samples")
        ax.set_title("ABL: training losses after isolation (LGA)")
        ax.legend()
        return save_figure(fig, path)

    # ------------------------------------------------------------------ the defense
    def _run(self, inputs: DefenseInput, model: nn.Module, device: torch.device, out: Path,
             progress: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
        from ..models import create_model, model_spec, save_model
        from ..training import train

        data, test, mark = inputs.poisoned_train, inputs.test_set, inputs.trigger
        assert data is not None
        poisoned = inputs.poisoned_indices
        spec = model_spec(model)
        metrics: dict[str, Any] = {}
        before = attack_metrics(model, test, mark, device, self.eval_batch_size)
        metrics.update({"ba_before": before["ba"], "asr_before": before.get("asr")})

        torch.manual_seed(self.seed)  # the fresh model's initial weights
        net = create_model(spec["arch"], spec["num_classes"], **spec["kwargs"]).to(device)
        phases: dict[str, Any] = {}

        def phase(name: str, train_set: Any, cfg: Any, hook: Callable | None, hook_id: str | None) -> None:
            log(f"abl: {name} ({cfg.epochs} epochs on {len(train_set):,} images)")
            res = train(net, train_set, test, cfg, out_dir=out / name, resume=True, device=device,
                        progress=progress, log=log, loss_hook=hook, loss_hook_id=hook_id)
            phases[name] = {"epochs": cfg.epochs, "images": len(train_set), "lr": cfg.lr,
                            "schedule": cfg.schedule, "batch_size": cfg.batch_size, "loss": hook_id,
                            "folder": name, "history": res.history}

        # 1. isolation with local gradient ascent
        lga = LGAHook(self.gamma, self.lga)
        phase("isolation", data, self._config(epochs=self.isolation_epochs, schedule="constant"), lga, lga.id)
        iso = attack_metrics(net, test, mark, device, self.eval_batch_size)
        metrics.update({"ba_isolation": iso["ba"], "asr_isolation": iso.get("asr")})

        # 2. rank every training sample by its loss; isolate the lowest
        losses = self.sample_losses(net, data, device)
        k = isolation_count(len(data), self.isolation_ratio)
        isolated = self.isolate(losses, k)
        cutoff = float(losses[isolated].max())
        report = self.isolation_report(isolated, poisoned, len(data))
        metrics.update({"isolated": k, **report})
        rest_mask = torch.ones(len(data), dtype=torch.bool)
        rest_mask[isolated] = False
        rest = data.subset(torch.nonzero(rest_mask).flatten(), f"{data.name}-abl-rest")
        suspects = data.subset(isolated, f"{data.name}-abl-isolated")
        log(f"abl: isolated {k} samples with loss ≤ {cutoff:.4g}"
            + (f" ({report['isolated_poisoned']} of them poisoned)" if poisoned is not None else ""))

        # 3. fine-tune on the rest
        if self.finetune_epochs > 0:
            phase("finetune", rest, self._config(epochs=self.finetune_epochs, schedule=self.finetune_schedule),
                  finetune_loss, f"abl-finetune/ce/start={weights_digest(net)}")
        ft = attack_metrics(net, test, mark, device, self.eval_batch_size)
        metrics.update({"ba_finetune": ft["ba"], "asr_finetune": ft.get("asr")})

        # 4. unlearn the isolated samples by gradient ascent
        if self.unlearning_epochs > 0:
            phase("unlearning", suspects,
                  self._config(epochs=self.unlearning_epochs, lr=self.unlearning_lr, schedule="constant",
                               batch_size=self.unlearning_batch_size), unlearning_loss,
                  f"abl-unlearn/-ce/start={weights_digest(net)}")
        net.eval()
        after = attack_metrics(net, test, mark, device, self.eval_batch_size)
        metrics.update({"ba_after": after["ba"], "asr_after": after.get("asr"), "n_attacked": after.get("n_attacked")})

        net = net.to(memory_format=torch.contiguous_format)
        self.artifacts.update({"model": net, "isolated": isolated, "losses": losses})
        save_model(net, out / "model.safetensors", defense=self.name, isolated=k, test_acc=after["ba"])
        figure = self.loss_figure(out / FIGURE, losses, poisoned, cutoff)
        by_group: dict[str, Any] = {}
        if poisoned is not None:
            truth = torch.zeros(len(data), dtype=torch.bool)
            truth[torch.as_tensor(poisoned, dtype=torch.long).flatten()] = True
            for name, sel in (("clean", ~truth), ("poisoned", truth)):
                v = losses[sel]
                by_group[name] = {"n": int(v.numel()), "median": float(v.median()) if v.numel() else None,
                                  "mean": float(v.mean()) if v.numel() else None}
        return {
            "metrics": metrics,
            "lga": {"mode": self.lga, "gamma": self.gamma,
                    "rule": "mean of sign(l_i - gamma) * l_i over the batch's samples" if self.lga == "sample"
                    else "sign(mean - gamma) * mean of the batch's cross-entropy (official ABL code, BackdoorBench)"},
            "isolation": {"ratio": self.isolation_ratio, "count": k, "loss_cutoff": cutoff,
                          "ranked_by": "cross-entropy under the isolation model, eval mode, no augmentation",
                          "losses": by_group, "indices": isolated.tolist()},
            "phases": phases,
            "model_file": "model.safetensors",
            "figures": [figure],
            "poisoned_train": {"images": len(data), "fingerprint": data.fingerprint()},
        }
