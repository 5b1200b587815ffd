"""Poisoning: attach a trigger to a share of the training set; export it as image files."""

from .poison import (MANIFEST_FORMAT, PoisonedSet, check_rate, export_image_set, export_poisoned, load_exported,
                     poison_count, poison_dataset, read_manifest, select_poison_indices)

__all__ = [
    "MANIFEST_FORMAT", "PoisonedSet", "check_rate", "export_image_set", "export_poisoned", "load_exported",
    "poison_count", "poison_dataset", "read_manifest", "select_poison_indices",
]
