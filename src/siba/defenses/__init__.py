"""Backdoor defenses, found by name in a registry, each run on one :class:`DefenseInput`.

>>> from siba.defenses import DefenseInput, create_defense
>>> inputs = DefenseInput.from_poisoned(victim, data.test, poisoned, val_size=1000)     # doctest: +SKIP
>>> result = create_defense("strip", n=20).run(inputs, "runs/x/defenses/strip")       # doctest: +SKIP
>>> result["metrics"]["auroc"]                                                          # doctest: +SKIP

Kinds (one base class each; each kind's metrics in :mod:`siba.defenses.metrics`):

- inspection — ``neural-cleanse`` (reversed trigger per class, MAD outlier test), ``grad-cam``
  (saliency share on the trigger);
- repair — ``fine-pruning`` (prune dormant last-layer channels, fine-tune);
- detection — ``strip`` (entropy under superposition), ``scale-up`` (scaled prediction consistency);
- training — ``abl`` (Anti-Backdoor Learning: a fresh model trained on the poisoned set, isolating and
  unlearning the samples it learns too easily).

``run(inputs, out_dir, progress=None)`` writes ``<out_dir>/result.json`` and the figures (PNG)
and returns the result; Python objects a run makes (reversed triggers, the repaired model) are in
the defense's ``artifacts`` afterwards.
"""

from .base import (DEFENSES, KINDS, Defense, DefenseInput, DetectionDefense, InspectionDefense, RepairDefense,
                   attack_metrics, clean_validation_subset, create_defense, last_conv_and_norm, list_defenses,
                   register_defense, trigger_region)
from .abl import ABL
from .fine_pruning import FinePruning
from .gradcam import GradCAM, gradcam_maps, mass_share
from .metrics import (auroc, detection_metrics, flagged_by_anomaly, mad_anomaly_index, midranks, roc_curve,
                      threshold_at_fpr, tpr_at_fpr)
from .neural_cleanse import NeuralCleanse
from .scaleup import ScaleUp
from .strip import STRIP

__all__ = [
    "ABL",
    "DEFENSES", "KINDS", "Defense", "DefenseInput", "DetectionDefense", "FinePruning", "GradCAM", "InspectionDefense",
    "NeuralCleanse", "RepairDefense", "STRIP", "ScaleUp", "attack_metrics", "auroc", "clean_validation_subset",
    "create_defense", "detection_metrics", "flagged_by_anomaly", "gradcam_maps", "last_conv_and_norm",
    "list_defenses", "mad_anomaly_index", "mass_share", "midranks", "register_defense", "roc_curve",
    "threshold_at_fpr", "tpr_at_fpr", "trigger_region",
]
