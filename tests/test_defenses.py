"""Defenses: the metrics against brute force, the registry and input checks, and each defense on a
planted backdoor (a small FastNet trained on 1,000 real CIFAR-10 images, 10% of them carrying a
5×5 BadNets patch) against the same network trained clean."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from siba.attacks import BlendTrigger, create_attack, load_trigger
from siba.data import load_dataset
from siba.defenses import (DEFENSES, DefenseInput, FinePruning, attack_metrics, auroc, clean_validation_subset,
                           create_defense, detection_metrics, flagged_by_anomaly, last_conv_and_norm,
                           list_defenses, mad_anomaly_index, mass_share, midranks, roc_curve, threshold_at_fpr,
                           tpr_at_fpr)
from siba.defenses.base import trigger_region
from siba.defenses.neural_cleanse import mask_on_trigger
from siba.errors import SibaError
from siba.models import create_model, load_model
from siba.poisoning import poison_dataset
from siba.training import TrainConfig, train

from .conftest import make_set

PNG = b"\x89PNG\r\n\x1a\n"
TARGET = 0


# --------------------------------------------------------------------------- metrics


def brute_auroc(neg: list[float], pos: list[float]) -> float:
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auroc_is_the_pairwise_count_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    neg = torch.randint(0, 6, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g).float()
    pos = (torch.randint(0, 6, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g) + seed % 3).float()
    assert auroc(neg, pos) == pytest.approx(brute_auroc(neg.tolist(), pos.tolist()), abs=1e-12)


def test_auroc_edge_cases_and_midranks():
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [0, 1, 2]) == 0.0
    assert auroc([1, 1, 1], [1, 1]) == 0.5
    assert auroc([0.1, 0.5], [0.5, 0.9]) == pytest.approx(0.875)  # one tie of four pairs counts ½
    assert math.isnan(auroc([], [1.0]))
    assert midranks([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_tpr_at_fpr_and_threshold_agree_with_brute_force():
    g = torch.Generator().manual_seed(3)
    neg = torch.randint(0, 20, (57,), generator=g).float()
    pos = torch.randint(5, 25, (43,), generator=g).float()
    thresholds = sorted(set(neg.tolist()) | set(pos.tolist()) | {math.inf})
    for max_fpr in (0.0, 0.01, 0.05, 0.2, 0.5):
        best = max(float((pos >= t).float().mean()) for t in thresholds if float((neg >= t).float().mean()) <= max_fpr)
        assert tpr_at_fpr(neg, pos, max_fpr) == pytest.approx(best)
        t = threshold_at_fpr(neg, max_fpr)
        assert float((neg >= t).float().mean()) <= max_fpr  # it keeps the false-positive budget...
        lower = [v for v in set(neg.tolist()) if v < t]
        assert all(float((neg >= v).float().mean()) > max_fpr for v in lower)  # ...and is the lowest that does
    fpr, tpr, thr = roc_curve(neg, pos)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1 and math.isinf(thr[0])
    assert torch.all(fpr[1:] >= fpr[:-1]) and torch.all(tpr[1:] >= tpr[:-1])


def test_detection_metrics_count_what_passes_the_detector():
    clean = torch.tensor([0.1, 0.2, 0.3, 0.9])  # one clean input above the threshold 0.5
    poison = torch.tensor([0.8, 0.95, 0.4, 0.2])  # two poisoned inputs pass it
    hits = torch.tensor([True, True, True, False])  # the last one does not reach the target anyway
    correct = torch.tensor([True, False, True, True])
    m = detection_metrics(clean, poison, 0.5, poison_hits=hits, clean_correct=correct)
    assert m["tpr"] == 0.5 and m["fpr"] == 0.25
    assert m["asr_before"] == 0.75
    assert m["asr_left"] == 0.25  # only the 0.4 input passes and hits
    assert m["ba_before"] == 0.75 and m["ba_kept"] == 0.5  # the 0.9 clean input is correct but rejected
    assert m["auroc"] == pytest.approx(brute_auroc(clean.tolist(), poison.tolist()))
    assert set(m["tpr_at_fpr"]) == {"0.01", "0.05"}


def test_mad_anomaly_index_on_hand_made_norms():
    norms = [10.0, 100, 102, 98, 101, 99, 103, 97, 100, 100]
    idx, median, mad = mad_anomaly_index(norms)
    assert median == 100
    assert mad == pytest.approx(1.4826 * 1.5)  # deviations 90,0,2,2,1,1,3,3,0,0: median 1.5
    assert idx[0] == pytest.approx(90 / (1.4826 * 1.5))
    assert idx[6] == pytest.approx(3 / (1.4826 * 1.5))
    assert flagged_by_anomaly(norms) == [0]
    # a large norm is as anomalous, but it is not a backdoor's small trigger: not flagged
    assert flagged_by_anomaly([1000.0] + norms[1:]) == []
    assert mad_anomaly_index([1000.0] + norms[1:])[0][0] == pytest.approx(idx[0] * 10)
    # a median of an even count is the mean of the middle two; a MAD of 0 makes any deviation infinite
    assert mad_anomaly_index([1, 2, 3, 4])[1] == 2.5
    assert mad_anomaly_index([5, 5, 5, 1])[0] == [0.0, 0.0, 0.0, math.inf]
    assert flagged_by_anomaly([5, 5, 5, 1]) == [3]


def test_mass_share_is_the_share_of_saliency_inside_the_region():
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0
    maps[1] = 1.0
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[0, 0] = True
    share, ok = mass_share(maps, region)
    assert share[0] == pytest.approx(0.75) and share[1] == pytest.approx(1 / 16)
    assert ok.tolist() == [True, True, False] and math.isnan(share[2])


# --------------------------------------------------------------------------- registry and settings


def test_registry_lists_every_defense_with_its_kind():
    assert {"neural-cleanse", "strip", "scale-up", "grad-cam", "fine-pruning"} <= set(DEFENSES)
    listed = list_defenses()
    assert listed["strip"].startswith("[detection]") and listed["fine-pruning"].startswith("[repair]")
    assert listed["neural-cleanse"].startswith("[inspection]") and listed["grad-cam"].startswith("[inspection]")
    assert create_defense("strip", n=7, blend="average").params()["n"] == 7
    assert create_defense("scale-up", threshold=0.6).params()["threshold"] == 0.6


@pytest.mark.parametrize("name, settings, words", [
    ("no-such", {}, "unknown defense 'no-such'"),
    ("strip", {"blur": 1}, "unknown option(s) blur for defense 'strip'"),
    ("strip", {"n": 0}, "n (the number of superimposed images)"),
    ("strip", {"blend": "mix"}, "unknown blend 'mix'"),
    ("strip", {"fpr": 1.5}, "fpr"),
    ("scale-up", {"scales": []}, "scales"),
    ("scale-up", {"scales": [1, 3]}, "scales"),
    ("scale-up", {"threshold": "high"}, "threshold"),
    ("neural-cleanse", {"epochs": 0}, "epochs"),
    ("neural-cleanse", {"lr": -1}, "lr"),
    ("neural-cleanse", {"classes": [0, 1]}, "at least 3 classes"),
    ("fine-pruning", {"ratio": 1.0}, "ratio"),
    ("fine-pruning", {"finetune_epochs": -1}, "finetune_epochs"),
    ("grad-cam", {"seed": -1}, "seed"),
])
def test_bad_settings_are_one_line_errors(name, settings, words):
    with pytest.raises(SibaError) as err:
        create_defense(name, **settings)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def synthetic():
    """A 4-class 8×8 set, a model for it, a 2×2 patch trigger and a clean validation set."""
    test, val = make_set(32, seed=1), make_set(40, seed=2)
    model = create_model("fastnet", 4, widths=(4, 8, 8, 8))
    mark = create_attack("badnets", size=2).generate(val)
    return SimpleNamespace(test=test, val=val, model=model, mark=mark)


@pytest.mark.parametrize("name", ["strip", "scale-up", "grad-cam", "neural-cleanse", "fine-pruning"])
def test_bad_inputs_are_one_line_errors_before_anything_is_written(synthetic, tmp_path, name):
    s = synthetic
    defense = create_defense(name)
    cases = {
        "another class count": DefenseInput(create_model("fastnet", 5, widths=(4, 8, 8, 8)), s.test, s.mark, s.val),
        "another image shape": DefenseInput(s.model, s.test, s.mark, make_set(40, size=16, seed=2)),
        "a trigger for other images": DefenseInput(s.model, s.test, create_attack("badnets", size=2).generate(
            make_set(8, size=16)), s.val),
    }
    for what, inputs in cases.items():
        with pytest.raises(SibaError) as err:
            defense.run(inputs, tmp_path / "out")
        assert "\n" not in str(err.value), what
        assert not (tmp_path / "out").exists(), what
    if defense.min_val_images():  # STRIP, Neural Cleanse and Fine-Pruning need clean data
        with pytest.raises(SibaError, match="clean validation"):
            defense.run(DefenseInput(s.model, s.test, s.mark), tmp_path / "out")
    if defense.needs_trigger:
        with pytest.raises(SibaError, match="trigger"):
            defense.run(DefenseInput(s.model, s.test, None, s.val), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_model_that_rejects_the_images_is_a_one_line_error(synthetic, tmp_path):
    def rgba(seed):
        rgb = make_set(32, seed=seed)
        return type(rgb)(torch.cat([rgb.images, rgb.images[:, :1]], 1), rgb.labels, rgb.classes, "rgba")
    with pytest.raises(SibaError, match="does not take 8×8×4 images") as err:
        create_defense("neural-cleanse").run(DefenseInput(synthetic.model, rgba(1), None, rgba(2)), tmp_path / "out")
    assert "\n" not in str(err.value)


def test_clean_validation_subset_leaves_out_the_poisoned_samples():
    train_set = make_set(100)
    poisoned = torch.arange(0, 100, 3)
    val = clean_validation_subset(train_set, poisoned, 60, seed=4)
    assert len(val) == 60 and val.name.endswith("clean-val")
    kept = {bytes(img.numpy().tobytes()) for img in val.images}
    assert not kept & {bytes(train_set.images[i].numpy().tobytes()) for i in poisoned.tolist()}
    with pytest.raises(SibaError, match="only 66 clean"):
        clean_validation_subset(train_set, poisoned, 67)


def test_pruning_baked_into_the_weights_is_the_masked_model():
    """Zeroing the conv channel and its batch norm's weight and bias computes what the mask does."""
    torch.manual_seed(0)
    for model in (create_model("fastnet", 10, widths=(8, 16, 16, 16)), create_model("vgg16", 10, width=0.0625),
                  create_model("resnet18", 10, width=4)):
        name, conv, bn_name, bn = last_conv_and_norm(model)
        assert bn is not None and bn.num_features == conv.out_channels, name
        with torch.no_grad():  # batch-norm statistics that are not the identity
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
        model.eval()
        x = torch.rand(4, 3, 32, 32)
        pruned = torch.tensor([0, 2, 3])
        mask = torch.ones(conv.out_channels)
        mask[pruned] = 0
        handle = FinePruning.mask_hook(bn, mask)
        with torch.no_grad():
            masked = model(x)
        handle.remove()
        FinePruning.bake(conv, bn, pruned)
        with torch.no_grad():
            assert torch.allclose(model(x), masked, atol=1e-5), name
            assert not torch.allclose(model(x), model(x * 0.5), atol=1e-3)  # the model still computes something


# --------------------------------------------------------------------------- the planted backdoor


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def planted():
    """A FastNet with a 5×5 BadNets backdoor (target 0, 10% of 1,000 training images), the same
    network trained on the clean images, 200 test images, and 200 clean validation images from the
    poisoned training set's unpoisoned samples."""
    data = load_dataset("cifar10-mini")
    train_set = data.train.subset(torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:1000])
    mark = create_attack("badnets", size=5, target=TARGET).generate(train_set)
    poisoned = poison_dataset(train_set, mark, 0.1, seed=0)
    cfg = TrainConfig(epochs=6, lr=0.2, schedule="onecycle", crop_pad=0, eval_every=0, seed=0)
    models = {}
    for name, ds in (("backdoored", poisoned.data), ("clean", train_set)):
        model = create_model("fastnet", 10, widths=(16, 32, 64, 128))
        train(model, ds, None, cfg, device="cpu", progress=False, log=_quiet)
        models[name] = model.eval()
    test = data.test.stratified_subset(20, seed=0)
    inputs = {name: DefenseInput.from_poisoned(m, test, poisoned, val_size=200, seed=1) for name, m in models.items()}
    before = attack_metrics(models["backdoored"], test, mark, torch.device("cpu"))
    assert before["asr"] > 0.9, before  # the backdoor is planted
    assert attack_metrics(models["clean"], test, mark, torch.device("cpu"))["asr"] < 0.2
    return SimpleNamespace(mark=mark, poisoned=poisoned, inputs=inputs, test=test)


def _read_back(result: dict, out: Path) -> dict:
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))  # the file is the returned result
    for name in result["figures"]:
        assert (out / name).read_bytes()[:8] == PNG, name
    assert result["figures"], "every defense draws at least one figure"
    return on_disk


def test_neural_cleanse_flags_the_backdoor_target_and_not_a_clean_model(planted, tmp_path):
    nc = create_defense("neural-cleanse", epochs=10, max_images=32, batch_size=8, patience=1)
    res = nc.run(planted.inputs["backdoored"], tmp_path / "bd", progress=False)
    _read_back(res, tmp_path / "bd")
    m = res["metrics"]
    idx = m["scores"]["anomaly_indices"]
    assert TARGET in m["flagged"] and m["target_flagged"] is True
    # the target is the outlier below the median (a class far above it can have as large an index)
    assert idx[TARGET] > 2 and idx[TARGET] == m["scores"]["max_anomaly_index_below_median"]
    assert m["scores"]["l1_norms"][TARGET] == min(m["scores"]["l1_norms"])
    # the reversed triggers are blend triggers that load back and do what was optimised
    rev = load_trigger(tmp_path / "bd" / "reversed" / f"class-{TARGET}")
    assert isinstance(rev, BlendTrigger) and rev.target == TARGET
    assert torch.equal(rev.alpha, nc.artifacts["reversed_triggers"][TARGET].alpha)
    assert float(rev.alpha[0].sum()) == pytest.approx(m["scores"]["l1_norms"][TARGET], rel=1e-4)
    assert res["per_class"][TARGET]["success"] >= 0.9
    # it looked where the planted patch is: the target's mask lies on the trigger's pixels (or on their
    # mirror image: the victim trained with horizontal flips) more than an even spread would
    region = trigger_region(planted.inputs["backdoored"].trigger)
    share, region_share = m["scores"]["target_mask_on_trigger"], m["scores"]["trigger_region_share"]
    assert (share, region_share) == pytest.approx(mask_on_trigger(rev.alpha, region))
    assert region_share == pytest.approx(2 * 25 / 32 ** 2)  # the 5×5 patch and its mirror image
    assert share > 2 * region_share  # more than a mask spread evenly would put there (measured: 4.4×)

    clean = create_defense("neural-cleanse", epochs=10, max_images=32, batch_size=8, patience=1).run(
        planted.inputs["clean"], tmp_path / "clean", progress=False)
    assert TARGET not in clean["metrics"]["flagged"]
    assert clean["metrics"]["scores"]["max_anomaly_index_below_median"] < idx[TARGET]


def test_strip_separates_triggered_inputs(planted, tmp_path):
    res = create_defense("strip", n=10).run(planted.inputs["backdoored"], tmp_path, progress=False)
    _read_back(res, tmp_path)
    m = res["metrics"]
    assert m["auroc"] > 0.8
    assert m["n_clean"] == len(planted.test) and m["n_poisoned"] == int((planted.test.labels != TARGET).sum())
    assert m["asr_before"] > 0.9 and m["asr_left"] <= m["asr_before"] - m["tpr"] + 1e-9
    assert res["settings"]["blend"] == "add" and "clip(x + x_clean" in res["superposition"]
    assert res["mean_entropy"]["poisoned"] < res["mean_entropy"]["clean"]


def test_scale_up_separates_triggered_inputs(planted, tmp_path):
    res = create_defense("scale-up").run(planted.inputs["backdoored"], tmp_path, progress=False)
    _read_back(res, tmp_path)
    m = res["metrics"]
    assert m["auroc"] > 0.7
    assert res["mean_spc"]["poisoned"] > res["mean_spc"]["clean"]
    assert m["tpr"] > m["fpr"] and m["asr_left"] < m["asr_before"]


def test_grad_cam_puts_more_saliency_on_the_patch_than_on_clean_images(planted, tmp_path):
    res = create_defense("grad-cam", examples=4).run(planted.inputs["backdoored"], tmp_path, progress=False)
    _read_back(res, tmp_path)
    s = res["metrics"]["scores"]
    assert s["region_pixels"] == 25 and s["layer"] == "block3.conv2"
    assert s["mass_share_poisoned"] > s["mass_share_clean"]
    assert s["share_ratio"] > 1.5
    assert res["metrics"]["flagged"] is None


def test_fine_pruning_lowers_the_attack_success(planted, tmp_path):
    fp = create_defense("fine-pruning", steps=8, finetune_epochs=2)
    res = fp.run(planted.inputs["backdoored"], tmp_path, progress=False)
    _read_back(res, tmp_path)
    m = res["metrics"]
    assert m["asr_after"] < m["asr_before"] - 0.2
    assert len(res["curve"]) == 8 and res["curve"][0]["pruned"] == 0
    assert m["pruned_channels"] == len(res["pruned"]) > 0
    # the channels chosen on the clean validation set keep its accuracy within the margin
    chosen = next(r for r in res["curve"] if r["pruned"] == m["pruned_channels"])
    assert chosen["val_acc"] >= res["curve"][0]["val_acc"] - 0.05
    # the repaired model is an ordinary model: saved, loaded, and measured the same
    repaired = load_model(tmp_path / "model.safetensors")
    again = attack_metrics(repaired, planted.test, planted.mark, torch.device("cpu"))
    assert again["asr"] == pytest.approx(m["asr_after"]) and again["ba"] == pytest.approx(m["ba_after"])
    conv = dict(repaired.named_modules())[res["layer"]["conv"]]
    assert float(conv.weight.detach()[res["pruned"]].abs().sum()) == 0
    # the model under suspicion is left as it was
    assert attack_metrics(planted.inputs["backdoored"].model, planted.test, planted.mark,
                          torch.device("cpu"))["asr"] == pytest.approx(m["asr_before"])


def test_mask_on_trigger_counts_the_triggers_pixels_and_their_mirror_image():
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[6:8, 6:8] = True  # a 2×2 patch in the bottom-right corner
    mask = torch.zeros(3, 8, 8)
    mask[:, 7, 7] = 1.0  # on the patch
    mask[:, 7, 0] = 1.0  # on its mirror image (a flipped training image put the patch there)
    mask[:, 0, 3] = 2.0  # elsewhere
    share, region_share = mask_on_trigger(mask, region)
    assert share == pytest.approx(0.5) and region_share == pytest.approx(8 / 64)
    assert mask_on_trigger(torch.zeros(8, 8), region) == (0.0, pytest.approx(8 / 64))  # an empty mask: no share
