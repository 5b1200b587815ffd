"""The README's main job, end to end on the shipped CIFAR-10 subset: the backdoor must work.

configs/demo.yaml: 10% poisoning (500 of 5,000 images), fastnet surrogate trained like the
victim (24 epochs, flip only, another seed), SIBA trigger k=100, ε=8/255, 20 passes, fastnet
victim 24 epochs (flip only, so it fits its training set): 94% ASR on a 2-core CPU in about
7 minutes. BadNets at the same rate is the positive control.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siba.cli.main import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


@pytest.mark.slow
def test_demo_config_plants_a_working_sparse_invisible_backdoor(tmp_path):
    out = tmp_path / "demo"
    assert main(["run", str(CONFIG), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    rows = {r["attack"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    siba, badnets = rows["siba"], rows["badnets"]
    # the pipeline works: the positive control is learned and the victims are real classifiers
    assert badnets["asr"] > 0.9
    assert siba["ba"] > 0.55 and badnets["ba"] > 0.55
    assert siba["train_acc"] > 0.99 and siba["poison_fit"] > 0.99
    # the sparse, invisible trigger works: chance for an all-to-one ASR is about (1 - BA) / 9 ≈ 5%
    assert siba["asr"] > 0.8
    assert siba["asr_quantized"] > 0.8  # as the exported 8-bit images carry it
    # and it is within its budgets
    assert siba["l0_max"] <= 100 and siba["l0_max_quantized"] <= 100
    assert siba["linf"] <= 8 / 255 + 1e-6 and siba["linf_quantized"] <= 8 / 255 + 1e-6
    assert siba["ssim"] > 0.95
    report = (out / "report.md").read_text()
    assert "| siba | 10% |" in report and (out / "triggers/siba/trigger.png").is_file()
    # the poisoned training set the victim learned from, exported as PNG files, read back
    import torch

    from siba.data import load_dataset
    from siba.poisoning import load_exported, read_manifest
    from siba.runtime import file_sha256

    folder = out / "victims" / "siba-r0.1" / "poisoned"
    exported, manifest, clean = load_exported(folder), read_manifest(folder), load_dataset("cifar10-mini").train
    chosen = torch.tensor(manifest["poisoned_indices"])
    assert len(chosen) == 500 and (clean.labels[chosen] != 0).all() and (exported.labels[chosen] == 0).all()
    changed = (exported.images.int() - clean.images.int()).abs()
    assert changed.amax() <= 8  # 8/255, in 8-bit levels
    assert int(changed.amax(1).gt(0).flatten(1).sum(1).max()) <= 100  # at most k = 100 pixels an image
    assert int(changed[chosen].amax(1).gt(0).flatten(1).sum(1).min()) > 50  # every poisoned image carries it
    rest = torch.ones(len(clean), dtype=torch.bool)
    rest[chosen] = False
    assert torch.equal(exported.images[rest], clean.images[rest])
    assert torch.equal(exported.labels[rest], clean.labels[rest])
    assert manifest["trigger"]["sha256"] == file_sha256(folder / manifest["trigger"]["file"])
    assert len(load_dataset(folder).test) == 1000  # with its clean test/ tree: a data set for `siba train --data`
