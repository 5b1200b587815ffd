"""The metrics every defense of a kind reports, computed in one place.

- **Detection** (STRIP, Scale-Up): a detector gives each input a *score*, higher meaning more
  suspicious, and flags the inputs whose score reaches a threshold. Over the clean test inputs
  (negatives) and the poisoned test inputs (positives):

  - ``auroc``: the area under the ROC curve, computed exactly from rank statistics (the
    Mann–Whitney U statistic over midranks), so a tie between a clean and a poisoned score
    counts one half — the probability that a random poisoned input scores above a random
    clean one, plus half the probability of a tie;
  - ``tpr_at_fpr``: the largest share of poisoned inputs flagged by any threshold that flags
    at most the given share of clean inputs (1% and 5%), read off the test ROC (an oracle
    threshold: it says how separable the scores are, not what a defender would reach);
  - ``tpr``, ``fpr``: at the detector's own threshold (calibrated without the test set);
  - ``asr_left``: the poisoned inputs that pass the detector (not flagged) *and* still get the
    attack's class, over all poisoned inputs; ``asr_before`` is the same without the detector;
    ``ba_kept``: the clean inputs that pass and are classified correctly, over all clean inputs.

- **Repair** (Fine-Pruning): ``ba`` and ``asr`` of a model on the clean test set and the
  triggered test set, before and after the repair (:func:`attack_metrics`).

- **Inspection** (Neural Cleanse, Grad-CAM): per-class scores and the classes flagged;
  :func:`mad_anomaly_index` is Neural Cleanse's outlier test.

The attack success follows the trigger's labelling rule: over the test images the trigger may
attack (``mark.rule.eligible``), success is the class ``mark.targets(y)``; for an untargeted rule
(no target classes) it is any wrong class, counted over the images classified correctly when clean,
as :func:`siba.metrics.evaluate_attack` counts it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

MAD_CONSISTENCY = 1.4826  # makes the median absolute deviation estimate σ for normal data
REPORTED_FPRS = (0.01, 0.05)


def _as_f64(x: Sequence[float] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).detach().cpu().flatten()


def midranks(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of ``values`` (ascending), tied values sharing the mean of their ranks."""
    v = _as_f64(values)
    if v.numel() == 0:
        return v
    order = torch.argsort(v, stable=True)
    _, counts = torch.unique_consecutive(v[order], return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)  # the last rank of each tie group
    group_rank = ends - (counts.to(torch.float64) - 1) / 2  # mean of first..last rank
    ranks = torch.empty_like(v)
    ranks[order] = torch.repeat_interleave(group_rank, counts)
    return ranks


def auroc(negatives: Sequence[float] | torch.Tensor, positives: Sequence[float] | torch.Tensor) -> float:
    """Area under the ROC curve of scores where positives should score higher (ties count ½).

    Exact: ``(R₊ − n₊(n₊+1)/2) / (n₊·n₋)`` with ``R₊`` the sum of the positives' midranks among
    all scores. NaN when either group is empty.
    """
    neg, pos = _as_f64(negatives), _as_f64(positives)
    n_neg, n_pos = neg.numel(), pos.numel()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    ranks = midranks(torch.cat([neg, pos]))
    u = float(ranks[n_neg:].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def flag_rates(negatives: torch.Tensor, positives: torch.Tensor,
               thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The shares of negatives and positives with ``score ≥ t`` for each threshold ``t``."""
    neg, pos = torch.sort(_as_f64(negatives)).values, torch.sort(_as_f64(positives)).values
    t = _as_f64(thresholds)
    fpr = (neg.numel() - torch.searchsorted(neg, t, right=False)).to(torch.float64) / max(neg.numel(), 1)
    tpr = (pos.numel() - torch.searchsorted(pos, t, right=False)).to(torch.float64) / max(pos.numel(), 1)
    return fpr, tpr


def roc_curve(negatives: Sequence[float] | torch.Tensor,
              positives: Sequence[float] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(fpr, tpr, thresholds)`` for every distinct score as a threshold (flag ``score ≥ t``),
    from the highest threshold (``+inf``: nothing flagged) down to the lowest score (all flagged)."""
    neg, pos = _as_f64(negatives), _as_f64(positives)
    values = torch.unique(torch.cat([neg, pos]))
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), values.flip(0)])
    fpr, tpr = flag_rates(neg, pos, thresholds)
    return fpr, tpr, thresholds


def tpr_at_fpr(negatives: Sequence[float] | torch.Tensor, positives: Sequence[float] | torch.Tensor,
               max_fpr: float) -> float:
    """The largest TPR of a threshold whose FPR is at most ``max_fpr`` (NaN without both groups)."""
    neg, pos = _as_f64(negatives), _as_f64(positives)
    if neg.numel() == 0 or pos.numel() == 0:
        return float("nan")
    fpr, tpr, _ = roc_curve(neg, pos)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max())  # the +inf threshold (fpr 0) is always there


def threshold_at_fpr(negatives: Sequence[float] | torch.Tensor, max_fpr: float) -> float:
    """The lowest threshold that flags (``score ≥ t``) at most ``max_fpr`` of ``negatives``.

    It is one of the negatives' scores, or ``+inf`` when even the highest one would flag too
    many (every clean score tied at the top, or ``max_fpr`` below ``1/n``).
    """
    neg = _as_f64(negatives)
    if neg.numel() == 0:
        return math.inf
    values = torch.unique(neg)  # ascending
    fpr, _ = flag_rates(neg, neg[:1], values)
    ok = torch.nonzero(fpr <= max_fpr + 1e-12).flatten()
    return float(values[ok[0]]) if ok.numel() else math.inf


def detection_metrics(clean_scores: torch.Tensor, poison_scores: torch.Tensor, threshold: float, *,
                      poison_hits: torch.Tensor, clean_correct: torch.Tensor,
                      fprs: Sequence[float] = REPORTED_FPRS) -> dict[str, Any]:
    """Every detection metric (see the module's docstring) from the two groups' scores.

    ``poison_hits``: whether each poisoned input gets the attack's class without the detector;
    ``clean_correct``: whether each clean input is classified correctly.
    """
    clean, poison = _as_f64(clean_scores), _as_f64(poison_scores)
    hits, correct = torch.as_tensor(poison_hits).cpu().bool(), torch.as_tensor(clean_correct).cpu().bool()
    flag_clean, flag_poison = clean >= threshold, poison >= threshold
    n_c, n_p = max(clean.numel(), 1), max(poison.numel(), 1)
    return {
        "auroc": auroc(clean, poison),
        "tpr_at_fpr": {f"{f:g}": tpr_at_fpr(clean, poison, f) for f in fprs},
        "threshold": threshold,
        "tpr": float(flag_poison.sum()) / n_p,
        "fpr": float(flag_clean.sum()) / n_c,
        "asr_before": float(hits.sum()) / n_p,
        "asr_left": float((hits & ~flag_poison).sum()) / n_p,
        "ba_before": float(correct.sum()) / n_c,
        "ba_kept": float((correct & ~flag_clean).sum()) / n_c,
        "n_clean": int(clean.numel()),
        "n_poisoned": int(poison.numel()),
    }


def attack_success(mark: Any, pred: torch.Tensor, labels: torch.Tensor,
                   clean_pred: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(counted, success)``: which images count for the ASR and whether the triggered prediction
    ``pred`` is the attack's success on each (see the module's docstring for untargeted rules)."""
    counted = mark.rule.eligible(labels).to(labels.device).bool()
    try:
        return counted, pred == mark.targets(labels).to(pred.device)
    except NotImplementedError:  # an untargeted rule: success is any wrong class
        if clean_pred is not None:
            counted = counted & (clean_pred == labels)
        return counted, pred != labels


def rate(numerator: int | float, denominator: int | float) -> float | None:
    """``numerator / denominator``, or None when nothing was counted."""
    return float(numerator) / denominator if denominator else None


def mad_anomaly_index(values: Sequence[float] | torch.Tensor) -> tuple[list[float], float, float]:
    """Neural Cleanse's anomaly index of each value: ``|v − median| / (1.4826 · MAD)``.

    Returns ``(indices, median, scaled_mad)``. With a MAD of zero (half the values equal) an index
    is ``inf`` for a value off the median and 0 on it. The median of an even count is the mean of
    the two middle values (numpy's median, as the reference code computes it).
    """
    v = _as_f64(values)
    if v.numel() == 0:
        return [], float("nan"), float("nan")
    median = _median(v)
    mad = MAD_CONSISTENCY * _median((v - median).abs())
    dev = (v - median).abs()
    if mad > 0:
        idx = (dev / mad).tolist()
    else:
        idx = [math.inf if d > 0 else 0.0 for d in dev.tolist()]
    return idx, median, mad


def _median(v: torch.Tensor) -> float:
    s = torch.sort(v).values
    n = s.numel()
    return float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def flagged_by_anomaly(values: Sequence[float] | torch.Tensor, threshold: float = 2.0) -> list[int]:
    """The positions whose value lies below the median with an anomaly index above ``threshold``
    (Neural Cleanse flags a class whose reversed trigger is abnormally *small*)."""
    idx, median, _ = mad_anomaly_index(values)
    v = _as_f64(values).tolist()
    return [i for i, (x, a) in enumerate(zip(v, idx)) if x < median and a > threshold]


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None, so it is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- repair and inspection


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512,
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Logits (float32, on the CPU) of uint8 or float ``[0,1]`` images, ``transform`` applied first."""
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(device)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        if transform is not None:
            x = transform(x)
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def attack_metrics(model: nn.Module, test_set: Any, mark: Any, device: torch.device,
                   batch_size: int = 512) -> dict[str, Any]:
    """``ba`` of ``model`` on the clean test set; with a trigger, ``asr`` over the images it attacks
    (the labelling rule as in :func:`attack_success`) and ``n_attacked``."""
    was = model.training
    model.eval()
    try:
        clean_pred = predict_logits(model, test_set.images, device, batch_size).argmax(1)
        out: dict[str, Any] = {"ba": float((clean_pred == test_set.labels).float().mean())}
        if mark is not None:
            mark = mark.to(device)
            pred = predict_logits(model, test_set.images, device, batch_size, mark.apply).argmax(1)
            counted, success = attack_success(mark, pred, test_set.labels, clean_pred)
            n = int(counted.sum())
            out.update({"asr": float((success & counted).sum()) / n if n else None, "n_attacked": n})
    finally:
        model.train(was)
    return out


def repair_metrics(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A repair's metrics from :func:`attack_metrics` of the model before and after it."""
    return {"ba_before": before.get("ba"), "asr_before": before.get("asr"),
            "ba_after": after.get("ba"), "asr_after": after.get("asr"),
            "n_attacked": after.get("n_attacked", before.get("n_attacked"))}


def inspection_metrics(scores: dict[str, Any], flagged: list[int] | None, trigger: Any = None) -> dict[str, Any]:
    """An inspection's metrics: ``flagged`` (class indices, or None for a view that flags nothing),
    ``scores``, and — with a known all-to-one trigger — its ``target`` and whether it is flagged."""
    out: dict[str, Any] = {"flagged": flagged, "scores": scores}
    if flagged is not None and trigger is not None and getattr(trigger, "target_rule", None) == "all-to-one":
        out["target"] = int(trigger.target)
        out["target_flagged"] = int(trigger.target) in flagged
    return out
