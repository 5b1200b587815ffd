"""ABL (Anti-Backdoor Learning) and the trainer's loss hook it runs through.

The unit tests pin the LGA loss, the hook's indices, the hook's identity in the checkpoint and
the settings checks; one end-to-end test plants a BadNets backdoor (a large 6×6 patch, 10% of
2,000 images of the shipped subset) and checks that ABL isolates mostly poisons and removes the
backdoor without destroying the clean accuracy.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from siba.data import DeviceLoader
from siba.defenses import DefenseInput, create_defense
from siba.defenses.abl import ABL, LGAHook, isolation_count, lga_loss
from siba.errors import SibaError
from siba.models import create_model
from siba.training import TrainConfig, train

from .conftest import make_set

WIDTHS = (8, 16, 16, 32)


def quiet(_: str) -> None:
    pass


def tiny_model(num_classes: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("fastnet", num_classes, widths=WIDTHS)


def shuffled_labels(n: int = 64, seed: int = 3):
    """A synthetic set whose labels are a random permutation: a wrong index would show in its label."""
    data = make_set(n, seed=0, name="train")
    g = torch.Generator().manual_seed(seed)
    data.labels = data.labels[torch.randperm(n, generator=g)]
    return data


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, lr=0.05, precision="fp32", crop_pad=1, schedule="constant", eval_every=0)
    return TrainConfig(**{**base, **kw})


# --------------------------------------------------------------------------- the LGA loss


def test_per_sample_lga_is_sign_of_loss_minus_gamma_times_loss_elementwise():
    losses = torch.tensor([0.01, 0.2, 0.49, 0.51, 0.9, 3.0], requires_grad=True)
    gamma = 0.5
    out = lga_loss(losses, gamma, "sample")
    expected = sum((1.0 if v > gamma else -1.0) * v for v in losses.tolist()) / len(losses)
    assert out.item() == pytest.approx(expected)
    out.backward()
    # each sample ascends (gradient −1/n) below γ and descends (+1/n) above it, on its own
    assert losses.grad.tolist() == pytest.approx([-1 / 6] * 3 + [1 / 6] * 3)
    # one sample at a time: exactly sign(l − γ)·l
    for v in losses.detach():
        assert lga_loss(v.view(1), gamma, "sample").item() == pytest.approx(float(torch.sign(v - gamma) * v))


def test_batch_lga_differs_from_per_sample_on_a_mixed_batch():
    losses = torch.tensor([0.1, 2.0])  # one sample below γ, one above; their mean (1.05) is above
    assert lga_loss(losses, 0.5, "sample").item() == pytest.approx((-0.1 + 2.0) / 2)
    assert lga_loss(losses, 0.5, "batch").item() == pytest.approx(1.05)
    low = torch.tensor([0.1, 0.3])  # both below γ: both rules ascend, and agree
    assert lga_loss(low, 0.5, "sample").item() == pytest.approx(lga_loss(low, 0.5, "batch").item()) == \
        pytest.approx(-0.2)
    with pytest.raises(SibaError, match="unknown lga 'mean'"):
        lga_loss(losses, 0.5, "mean")


def test_the_lga_hook_is_the_lga_of_the_per_sample_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(8, 4, generator=g), torch.arange(8) % 4
    per = F.cross_entropy(logits, y, reduction="none")
    hook = LGAHook(0.5, "sample")
    assert hook(logits, y, torch.arange(8), 0).item() == pytest.approx(lga_loss(per, 0.5, "sample").item())
    assert hook.id == "abl-lga/sample/gamma=0.5" and LGAHook(0.25, "batch").id == "abl-lga/batch/gamma=0.25"


# --------------------------------------------------------------------------- the loader and the trainer's hook


@pytest.mark.parametrize("crop_pad,flip", [(0, False), (2, True)])
def test_loader_indices_leave_batches_unchanged(crop_pad, flip):
    data = shuffled_labels(50)
    kw = dict(batch_size=16, shuffle=True, crop_pad=crop_pad, flip=flip, seed=4)
    plain, indexed = DeviceLoader(data.images, data.labels, **kw), DeviceLoader(data.images, data.labels, **kw,
                                                                                  with_indices=True)
    plain.set_epoch(3)
    indexed.set_epoch(3)
    seen = []
    for (x0, y0), (x1, y1, idx) in zip(plain, indexed, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)  # bit-identical order and augmentation
        assert torch.equal(y1, data.labels[idx])
        if crop_pad == 0 and not flip:
            assert torch.equal(x1, data.images[idx].float() / 255)
        seen += idx.tolist()
    assert sorted(seen) == list(range(50)) and seen != list(range(50))  # every sample once, shuffled


def test_the_loss_hook_gets_each_batchs_indices_in_the_training_set():
    data = shuffled_labels(64)
    calls = []

    def hook(logits, y, idx, epoch):
        assert logits.dtype == torch.float32 and logits.shape == (y.shape[0], 4)
        calls.append((epoch, idx.clone(), y.clone()))
        return F.cross_entropy(logits, y)

    train(tiny_model(), data, None, cfg(epochs=2), device="cpu", progress=False, log=quiet, loss_hook=hook,
          loss_hook_id="record")
    assert [c[0] for c in calls] == [0] * 4 + [1] * 4  # 64 images in batches of 16, two epochs (0-based)
    for epoch in (0, 1):
        idx = torch.cat([c[1] for c in calls if c[0] == epoch])
        assert sorted(idx.tolist()) == list(range(64))
    for _, idx, y in calls:
        assert torch.equal(y, data.labels[idx])
    first = torch.cat([c[1] for c in calls if c[0] == 0])
    second = torch.cat([c[1] for c in calls if c[0] == 1])
    assert not torch.equal(first, second)  # each epoch its own order


def test_a_mean_cross_entropy_hook_trains_exactly_like_no_hook():
    data = make_set(64, seed=0)
    plain = train(tiny_model(), data, None, cfg(), device="cpu", progress=False, log=quiet).model.state_dict()
    hooked = train(tiny_model(), data, None, cfg(), device="cpu", progress=False, log=quiet,
                   loss_hook=lambda logits, y, idx, epoch: F.cross_entropy(logits, y), loss_hook_id="ce").model
    assert all(torch.equal(plain[k], v) for k, v in hooked.state_dict().items())
    ascended = train(tiny_model(), data, None, cfg(), device="cpu", progress=False, log=quiet,
                     loss_hook=lambda logits, y, idx, epoch: -F.cross_entropy(logits, y), loss_hook_id="-ce")
    assert ascended.history[-1]["train_loss"] < 0  # the hook's loss is what is reported and minimised
    assert not all(torch.equal(plain[k], v) for k, v in ascended.model.state_dict().items())


def test_a_resume_with_another_hook_is_refused(tmp_path):
    data = make_set(64, seed=0)
    out = tmp_path / "run"
    ce = lambda logits, y, idx, epoch: F.cross_entropy(logits, y)  # noqa: E731
    kw = dict(device="cpu", progress=False, log=quiet)
    train(tiny_model(), data, None, cfg(epochs=1), out_dir=out, loss_hook=ce, loss_hook_id="hook-a", **kw)
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["settings"]["loss_hook"] == "hook-a"
    before = (out / "checkpoint.safetensors").read_bytes()
    for hook, hook_id, message in [
        (ce, "hook-b", "was made with the loss hook hook-a, not the loss hook hook-b; use another --out"),
        (None, None, "was made with the loss hook hook-a, not the plain cross-entropy loss; use another --out"),
    ]:
        with pytest.raises(SibaError) as exc:
            train(tiny_model(), data, None, cfg(epochs=1), out_dir=out, resume=True, loss_hook=hook,
                  loss_hook_id=hook_id, **kw)
        assert str(exc.value).startswith(f"the checkpoint in {out} ") and message in str(exc.value)
        assert "\n" not in str(exc.value)
    assert (out / "checkpoint.safetensors").read_bytes() == before
    # the same hook id resumes (the finished run is reused, not retrained)
    res = train(tiny_model(), data, None, cfg(epochs=1), out_dir=out, resume=True, loss_hook=ce,
                loss_hook_id="hook-a", **kw)
    assert len(res.history) == 1
    # a run without a hook records no hook, and refuses to become one
    plain = tmp_path / "plain"
    train(tiny_model(), data, None, cfg(epochs=1), out_dir=plain, **kw)
    assert "loss_hook" not in json.loads((plain / "checkpoint.json").read_text())["settings"]
    with pytest.raises(SibaError, match="was made with the plain cross-entropy loss, not the loss hook hook-a;"):
        train(tiny_model(), data, None, cfg(epochs=1), out_dir=plain, resume=True, loss_hook=ce,
              loss_hook_id="hook-a", **kw)


@pytest.mark.parametrize("hook,hook_id,message", [
    (lambda *a: a[0].sum(), None, "a loss_hook needs loss_hook_id, a non-empty string"),
    (lambda *a: a[0].sum(), "  ", "a loss_hook needs loss_hook_id, a non-empty string"),
    (None, "x", "loss_hook_id is given but no loss_hook"),
    ("ce", "x", "loss_hook must be callable"),
    (lambda *a: a[0].sum(1), "x", "the loss hook must return a scalar float tensor, got a (16,) torch.float32 tensor"),
    (lambda *a: 1.0, "x", "the loss hook must return a scalar float tensor, got float"),
])
def test_bad_loss_hooks_are_one_line_errors(hook, hook_id, message):
    with pytest.raises(SibaError) as exc:
        train(tiny_model(), make_set(64), None, cfg(epochs=1), device="cpu", progress=False, log=quiet,
              loss_hook=hook, loss_hook_id=hook_id)
    assert message in str(exc.value) and "\n" not in str(exc.value)


# --------------------------------------------------------------------------- ABL's settings and inputs


def test_presets_fill_only_what_is_not_given():
    paper = ABL()
    assert (paper.isolation_epochs, paper.finetune_epochs, paper.unlearning_epochs) == (20, 60, 80)
    assert (paper.isolation_ratio, paper.gamma, paper.lga, paper.unlearning_lr) == (0.01, 0.5, "sample", 5e-4)
    cpu = create_defense("abl", preset="cpu", unlearning_epochs=7)
    assert (cpu.isolation_epochs, cpu.finetune_epochs, cpu.unlearning_epochs) == (5, 5, 7)
    assert cpu.kind == "training" and cpu.params()["preset"] == "cpu"
    assert isolation_count(50_000, 0.01) == 500 and isolation_count(2_000, 0.01) == 20


@pytest.mark.parametrize("kw,message", [
    ({"preset": "gpu"}, "unknown preset 'gpu' (use paper, cpu)"),
    ({"lga": "mean"}, "unknown lga 'mean' (use sample, batch)"),
    ({"isolation_ratio": 0}, "isolation_ratio (the share of samples isolated) must be a number in (0, 1), got 0"),
    ({"isolation_ratio": 1.0}, "isolation_ratio (the share of samples isolated) must be a number in (0, 1)"),
    ({"gamma": -0.5}, "gamma (the LGA loss threshold) must be a number > 0, got -0.5"),
    ({"isolation_epochs": 0}, "isolation_epochs must be a whole number ≥ 1, got 0"),
    ({"unlearning_epochs": 2.5}, "unlearning_epochs must be a whole number ≥ 0, got 2.5"),
    ({"finetune_epochs": "many"}, "finetune_epochs must be a whole number ≥ 0, got 'many'"),
    ({"unlearning_lr": 0}, "unlearning_lr must be a number > 0, got 0"),
    ({"finetune_schedule": "cosine"}, "unknown finetune_schedule 'cosine' (use step, onecycle, constant)"),
    ({"flip": "yes"}, "flip must be true or false, got 'yes'"),
    ({"seed": -1}, "seed must be a whole number in [0, 2**32), got -1"),
    ({"isolation_rate": 0.1}, "unknown option(s) isolation_rate for defense 'abl'"),
])
def test_bad_settings_are_one_line_errors(kw, message):
    with pytest.raises(SibaError) as exc:
        create_defense("abl", **kw)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value), str(exc.value)


def _inputs(**kw):
    train_set, test = make_set(64, seed=0), make_set(32, seed=1)
    base = dict(model=tiny_model(), test_set=test, poisoned_train=train_set, poisoned_indices=torch.tensor([1, 2]))
    return DefenseInput(**{**base, **kw})


@pytest.mark.parametrize("change,message", [
    ({"poisoned_train": None}, "abl needs the poisoned training set it defends (DefenseInput.poisoned_train)"),
    ({"poisoned_train": make_set(64, size=6)}, "the poisoned training set has 6×6×3 images, the test set 8×8×3"),
    ({"poisoned_train": make_set(64, classes=3)}, "the poisoned training set has 3 classes, the test set 4"),
    ({"model": tiny_model(num_classes=5)}, "the model is for 5 classes, the data has 4"),
    ({"model": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))},
     "this model was not made by siba.models.create_model; its architecture is unknown"),
    ({"poisoned_indices": torch.tensor([64])}, "poisoned indices outside 0..63"),
])
def test_bad_inputs_are_one_line_errors_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(SibaError) as exc:
        ABL(preset="cpu").run(_inputs(**change), tmp_path / "abl", progress=False)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value), str(exc.value)
    assert not (tmp_path / "abl").exists()


def test_a_ratio_that_isolates_nothing_is_refused(tmp_path):
    with pytest.raises(SibaError, match=r"^isolation_ratio 0.01 of 64 training images isolates no sample; raise it$"):
        ABL(preset="cpu").run(_inputs(), tmp_path / "abl", progress=False)
    assert not (tmp_path / "abl").exists()


def test_abl_without_a_trigger_or_ground_truth_and_a_stale_unlearning_checkpoint(tmp_path):
    """ABL on a small synthetic set: BA only (no trigger), no precision (no ground truth); extending a
    constant-lr fine-tuning changes the unlearning's starting weights, so its old checkpoint is refused."""
    inputs = DefenseInput(tiny_model(), make_set(32, seed=1), poisoned_train=make_set(200, seed=0))
    settings = dict(isolation_epochs=1, finetune_epochs=1, unlearning_epochs=1, isolation_ratio=0.02,
                    finetune_schedule="constant", lr=0.05, batch_size=32, precision="fp32", crop_pad=0)
    result = ABL(**settings).run(inputs, tmp_path / "abl", progress=False, log=quiet)
    m = result["metrics"]
    assert m["asr_before"] is None and m["asr_after"] is None and 0 <= m["ba_after"] <= 1
    assert m["isolated"] == 4 and m["isolation_precision"] is None and m["isolation_recall"] is None
    assert len(result["isolation"]["indices"]) == 4 and result["isolation"]["losses"] == {}
    assert (tmp_path / "abl" / "abl-isolation-loss.png").is_file()
    with pytest.raises(SibaError) as exc:
        ABL(**{**settings, "finetune_epochs": 2}).run(inputs, tmp_path / "abl", progress=False, log=quiet)
    text = str(exc.value)
    assert text.startswith(f"the checkpoint in {tmp_path / 'abl' / 'unlearning'} was made with the loss hook "
                           "abl-unlearn/-ce/start=") and "\n" not in text, text


# --------------------------------------------------------------------------- a planted backdoor, end to end

VICTIM_WIDTHS = (16, 32, 64, 128)
# the cpu preset with a stronger unlearning step for 20 isolated samples (one batch of 20 a step, five steps);
# measured values (fp32, seed 0) in the assertions' comments
ABL_SETTINGS = dict(preset="cpu", crop_pad=0, unlearning_lr=0.005, unlearning_batch_size=20, precision="fp32")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """2,000 images of cifar10-mini (200 a class), 10% poisoned with a 6×6 BadNets patch; a victim
    trained on them; ABL run on that poisoned set (one run shared by the tests below)."""
    from siba.attacks import create_attack
    from siba.data import load_dataset
    from siba.poisoning import poison_dataset

    data = load_dataset("cifar10-mini")
    train_set = data.train.stratified_subset(200, seed=0, name="mini-2k")
    test = data.test.stratified_subset(50, seed=0, name="mini-test-500")
    trigger = create_attack("badnets", size=6).generate(train_set)
    poisoned = poison_dataset(train_set, trigger, rate=0.1, seed=0)
    torch.manual_seed(0)
    victim = create_model("fastnet", 10, widths=VICTIM_WIDTHS)
    train(victim, poisoned.data, test, TrainConfig(epochs=4, lr=0.2, schedule="onecycle", crop_pad=0,
                                                   precision="fp32", eval_every=0),
          device="cpu", progress=False, log=quiet)
    inputs = DefenseInput(victim, test, poisoned.mark, poisoned_train=poisoned.data, poisoned_indices=poisoned.indices)
    out = tmp_path_factory.mktemp("abl") / "run"
    defense = create_defense("abl", **ABL_SETTINGS)
    result = defense.run(inputs, out, progress=False, log=quiet)
    return {"inputs": inputs, "out": out, "result": result, "defense": defense, "poisoned": poisoned}


def test_abl_isolates_poisons_and_removes_a_planted_backdoor(planted):
    m = planted["result"]["metrics"]
    assert m["poisoned_total"] == 200 and m["isolated"] == 20 and m["poison_rate"] == pytest.approx(0.1)
    # measured (fp32): 13 of the 20 isolated are poisoned (precision 0.65, recall 0.065; 0.70 in bf16)
    # against a 10% base rate
    assert m["isolation_precision"] >= 0.4
    assert m["isolation_recall"] == pytest.approx(m["isolated_poisoned"] / 200)
    # measured: victim ASR 1.0, fine-tuned 1.0 (fine-tuning alone keeps the backdoor), after ABL 0.064
    assert m["asr_before"] >= 0.9 and m["asr_finetune"] >= 0.8
    assert m["asr_after"] <= 0.3 and m["asr_after"] <= m["asr_before"] - 0.6
    # measured: BA 0.278 victim (4 epochs), 0.454 fine-tuned, 0.396 after unlearning; chance is 0.10
    assert m["ba_after"] >= 0.3 and m["ba_after"] >= m["ba_finetune"] - 0.15
    # the isolated indices are the lowest losses, and the poisoned samples' losses are far lower
    iso = planted["result"]["isolation"]
    assert iso["losses"]["poisoned"]["median"] < iso["losses"]["clean"]["median"] / 2
    losses = planted["defense"].artifacts["losses"]
    isolated = torch.tensor(iso["indices"])
    rest = torch.ones(len(losses), dtype=torch.bool)
    rest[isolated] = False
    assert losses[isolated].max() <= losses[rest].min() and float(losses[isolated].max()) == iso["loss_cutoff"]


def test_abl_writes_its_result_figure_model_and_phases(planted):
    out, result = planted["out"], planted["result"]
    saved = json.loads((out / "result.json").read_text())
    assert saved["defense"] == "abl" and saved["kind"] == "training" and saved["metrics"] == result["metrics"]
    assert saved["lga"]["mode"] == "sample" and saved["settings"]["lga"] == "sample"
    assert saved["figures"] == ["abl-isolation-loss.png"]
    assert (out / "abl-isolation-loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    phases = saved["phases"]
    assert [phases[p]["epochs"] for p in ("isolation", "finetune", "unlearning")] == [5, 5, 5]
    assert phases["unlearning"]["images"] == 20 and phases["finetune"]["images"] == 1980
    assert phases["unlearning"]["history"][-1]["train_loss"] < 0  # −CE: the isolated samples' loss rose
    hooks = {p: json.loads((out / p / "checkpoint.json").read_text())["settings"]["loss_hook"] for p in phases}
    assert hooks["isolation"] == "abl-lga/sample/gamma=0.5"
    assert hooks["finetune"].startswith("abl-finetune/ce/start=") and hooks["unlearning"].startswith(
        "abl-unlearn/-ce/start=")
    assert hooks["finetune"][-16:] != hooks["unlearning"][-16:]  # each names the weights it started from
    from siba.defenses.base import attack_metrics
    from siba.models import load_model

    model = load_model(out / "model.safetensors")
    again = attack_metrics(model, planted["inputs"].test_set, planted["poisoned"].mark, torch.device("cpu"))
    assert again["ba"] == pytest.approx(result["metrics"]["ba_after"])
    assert again["asr"] == pytest.approx(result["metrics"]["asr_after"])


def test_abl_run_again_resumes_its_finished_phases_and_refuses_stale_ones(planted, tmp_path):
    out, first = planted["out"], planted["result"]
    phases = ("isolation", "finetune", "unlearning")
    stamps = {p: (out / p / "checkpoint.safetensors").stat().st_mtime_ns for p in phases}
    again = create_defense("abl", **ABL_SETTINGS).run(planted["inputs"], out, progress=False, log=quiet)
    assert again["metrics"] == first["metrics"]
    assert again["isolation"]["indices"] == first["isolation"]["indices"]
    # nothing retrained: every phase's finished checkpoint is reused, none rewritten
    assert {p: (out / p / "checkpoint.safetensors").stat().st_mtime_ns for p in phases} == stamps
    assert [len(again["phases"][p]["history"]) for p in phases] == [5, 5, 5]
    with pytest.raises(SibaError) as exc:
        create_defense("abl", **{**ABL_SETTINGS, "gamma": 0.4}).run(planted["inputs"], out, progress=False, log=quiet)
    assert "the loss hook abl-lga/sample/gamma=0.5, not the loss hook abl-lga/sample/gamma=0.4" in str(exc.value)
    # one more isolation epoch (a constant-lr run may be extended) changes the fine-tuning's starting
    # weights (and here the isolated set too): the old fine-tuning checkpoint is refused rather than
    # continued from another model
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(SibaError) as exc:
        create_defense("abl", **{**ABL_SETTINGS, "isolation_epochs": 6}).run(planted["inputs"], copy, progress=False,
                                                                              log=quiet)
    text = str(exc.value)
    assert text.startswith(f"the checkpoint in {copy / 'finetune'} was made ") and "\n" not in text
    assert "with the loss hook abl-finetune/ce/start=" in text or "on other training data" in text
