"""Shared fixtures: small synthetic data sets, a private cache, two threads."""

from __future__ import annotations

import os

import pytest
import torch

from siba.data import DataSplits, ImageSet


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep every test's decoded-data cache out of the user's home."""
    monkeypatch.setenv("SIBA_CACHE", str(tmp_path_factory.getbasetemp() / "siba-cache"))


def make_set(n: int = 64, classes: int = 4, size: int = 8, seed: int = 0, name: str = "synthetic") -> ImageSet:
    """Images whose class is written in their mean colour (learnable), labels balanced."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = torch.rand(n, 3, size, size, generator=g) * 0.5
    tint = torch.zeros(n, 3, 1, 1)
    tint[:, 0, 0, 0] = labels.float() / max(1, classes - 1) * 0.5
    images = ((base + tint).clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(images, labels, [f"c{i}" for i in range(classes)], name)


@pytest.fixture
def tiny_splits() -> DataSplits:
    return DataSplits(make_set(64, seed=0, name="train"), make_set(32, seed=1, name="test"), "synthetic")


@pytest.hookimpl(trylast=True)  # after -m and -k have selected
def pytest_collection_modifyitems(config, items):
    """Leave out the ``stand_in`` tests (fast variants of slow ones) when their slow tests run too."""
    if not any(item.get_closest_marker("slow") for item in items):
        return
    kept = [item for item in items if not item.get_closest_marker("stand_in")]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("stand_in")])
        items[:] = kept


os.environ.setdefault("SIBA_THREADS", str(min(2, os.cpu_count() or 1)))
torch.set_num_threads(int(os.environ["SIBA_THREADS"]))
