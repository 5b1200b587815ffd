"""The trainer: lr schedules, config checks, run outputs, exact resumption, a real short run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from siba.data import DataSplits
from siba.errors import SibaError
from siba.models import ImageClassifier, create_model, load_model
from siba.runtime import load_tensors, save_tensors
from siba.training import TrainConfig, accuracy, predict, train
from siba.training.trainer import REPORT_ONLY, settings_digest

from .conftest import make_set

WIDTHS = (8, 16, 16, 32)


def quiet(_: str) -> None:
    pass


def tiny_config(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=0.05, precision="fp32", seed=0, crop_pad=1)
    base.update(kw)
    return TrainConfig(**base)


def fresh_model(num_classes: int = 4, seed: int = 0, widths=WIDTHS):
    torch.manual_seed(seed)
    return create_model("fastnet", num_classes, widths=widths)


def run(splits: DataSplits, cfg: TrainConfig, **kw):
    model = kw.pop("model", None) or fresh_model(splits.num_classes)
    return train(model, splits.train, splits.test, cfg, device="cpu", progress=False, log=quiet, **kw)


# --------------------------------------------------------------------------- schedules


def test_step_schedule_default_milestones():
    cfg = TrainConfig(epochs=100, lr=0.1)
    assert cfg.resolved_milestones() == [60, 90]
    spe = 10
    assert cfg.lr_at(0, spe) == pytest.approx(0.1)
    assert cfg.lr_at(59 * spe + 9, spe) == pytest.approx(0.1)
    assert cfg.lr_at(60 * spe, spe) == pytest.approx(0.01)
    assert cfg.lr_at(89 * spe + 9, spe) == pytest.approx(0.01)
    assert cfg.lr_at(90 * spe, spe) == pytest.approx(0.001)
    assert cfg.lr_at(99 * spe + 9, spe) == pytest.approx(0.001)
    assert TrainConfig(epochs=10).resolved_milestones() == [6, 9]


def test_step_schedule_custom_milestones_and_gamma():
    cfg = TrainConfig(epochs=10, lr=0.4, milestones=[5, 2], gamma=0.5)
    assert cfg.resolved_milestones() == [2, 5]
    lrs = [cfg.lr_at(e * 3, 3) for e in range(10)]
    assert lrs == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1])


def test_onecycle_rises_then_falls_to_zero():
    cfg = TrainConfig(epochs=10, lr=0.2, schedule="onecycle", warmup=0.2)
    spe = 10
    lrs = [cfg.lr_at(s, spe) for s in range(100)]
    peak = max(range(100), key=lambda s: lrs[s])
    assert peak == 20 and lrs[peak] == pytest.approx(0.2)
    assert lrs[0] == pytest.approx(0.02)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rising
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))  # falling
    assert lrs[-1] < 0.01 and lrs[-1] > 0
    assert cfg.lr_at(100, spe) == 0.0
    assert lrs[60] == pytest.approx(0.2 * 40 / 80)


def test_constant_schedule():
    cfg = TrainConfig(epochs=5, lr=0.03, schedule="constant")
    assert {cfg.lr_at(s, 7) for s in range(35)} == {0.03}


@pytest.mark.parametrize("kw,match", [
    ({"epochs": -1}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"schedule": "cosine"}, "schedule"),
    ({"batch_size": 0}, "batch size"),
    ({"lr": 0.0}, "learning rate"),
    ({"precision": "fp16"}, "precision"),
    ({"label_smoothing": 1.0}, "label smoothing"),
    ({"crop_pad": -1}, "crop"),
])
def test_config_validation(kw, match):
    with pytest.raises(SibaError, match=match):
        TrainConfig(**kw)


def test_config_from_dict():
    cfg = TrainConfig.from_dict({"epochs": 3, "schedule": "onecycle"})
    assert cfg.epochs == 3 and cfg.schedule == "onecycle" and cfg.lr == 0.1
    assert TrainConfig.from_dict(None) == TrainConfig()
    with pytest.raises(SibaError, match="unknown training option.*epoch"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(SibaError, match="epochs"):
        TrainConfig.from_dict({"epochs": -3})


def test_config_accepts_numbers_that_yaml_reads_as_text():
    import yaml

    d = yaml.safe_load("{lr: 1e-3, weight_decay: 5e-4, gamma: 2e-1, warmup: 1e-1, epochs: 1e1, milestones: [3, '6']}")
    assert isinstance(d["lr"], str) and isinstance(d["weight_decay"], str)  # PyYAML's reading of 1e-3
    cfg = TrainConfig.from_dict(d)
    assert (cfg.lr, cfg.weight_decay, cfg.gamma, cfg.warmup) == (1e-3, 5e-4, 0.2, 0.1)
    assert cfg.epochs == 10 and isinstance(cfg.epochs, int) and cfg.milestones == [3, 6]
    assert TrainConfig(batch_size="64", seed="7").batch_size == 64


@pytest.mark.parametrize("kw,message", [
    ({"lr": "abc"}, "lr must be a number, got 'abc'"),
    ({"lr": "nan"}, "lr must be a number, got 'nan'"),
    ({"momentum": [0.9]}, "momentum must be a number, got [0.9]"),
    ({"weight_decay": "5e-4x"}, "weight_decay must be a number, got '5e-4x'"),
    ({"weight_decay": -5e-4}, "weight decay must be ≥ 0, got -0.0005"),
    ({"momentum": 1}, "momentum must be in [0, 1), got 1"),
    ({"momentum": "-0.5"}, "momentum must be in [0, 1), got -0.5"),
    ({"gamma": 0}, "gamma (the step schedule's lr factor) must be positive, got 0"),
    ({"warmup": -0.2}, "warmup (the one-cycle share of steps rising to lr) must be in [0, 1], got -0.2"),
    ({"warmup": 2}, "warmup (the one-cycle share of steps rising to lr) must be in [0, 1], got 2"),
    ({"label_smoothing": "x"}, "label_smoothing must be a number, got 'x'"),
    ({"epochs": "1.5"}, "epochs must be a whole number, got '1.5'"),
    ({"batch_size": True}, "batch_size must be a whole number, got True"),
    ({"crop_pad": "four"}, "crop_pad must be a whole number, got 'four'"),
    ({"seed": "abc"}, "seed must be a whole number, got 'abc'"),
    ({"eval_every": -2}, "eval_every must be ≥ 0 (0: evaluate at the end only), got -2"),
    ({"eval_batch_size": 0}, "eval batch size must be positive, got 0"),
    ({"milestones": "60,90"}, "milestones must be a list of epochs, got '60,90'"),
    ({"milestones": [60, "late"]}, "milestones must be a whole number, got 'late'"),
    ({"milestones": [-1]}, "milestones must be epochs ≥ 0, got [-1]"),
])
def test_config_rejects_bad_numbers_with_one_line(kw, message):
    with pytest.raises(SibaError) as exc:
        TrainConfig.from_dict(kw)
    assert str(exc.value) == message


def test_validate_is_rechecked_by_train(tiny_splits):
    cfg = tiny_config()
    cfg.schedule = "bogus"  # changed after construction
    with pytest.raises(SibaError, match="schedule"):
        run(tiny_splits, cfg)


# --------------------------------------------------------------------------- runs


def test_run_writes_its_outputs(tmp_path, tiny_splits):
    out = tmp_path / "run"
    res = run(tiny_splits, tiny_config(epochs=2), out_dir=out)
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    assert {"epoch", "train_loss", "train_acc", "test_acc"} <= set(rows[0])
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r, h in zip(rows, res.history):
        for key in ("train_loss", "train_acc", "test_acc"):
            assert float(r[key]) == pytest.approx(h[key], rel=1e-5), key
    # 64 images in batches of 16: the training accuracy counts whole images; the last epoch's test
    # accuracy is the final model's
    assert all((h["train_acc"] * 64).is_integer() for h in res.history)
    assert res.history[-1]["test_acc"] == accuracy(res.model, tiny_splits.test, precision="fp32")
    assert (out / "checkpoint.safetensors").is_file()
    ck = json.loads((out / "checkpoint.json").read_text())
    assert ck["epoch"] == 2 and len(ck["history"]) == 2
    assert ck["model"]["arch"] == "fastnet" and ck["config"]["epochs"] == 2
    # the settings that decide the result, with their digest; what only changes the report is left out
    settings = ck["settings"]
    assert ck["digest"] == settings_digest(settings)
    assert settings["model"] == ck["model"] and settings["lr"] == 0.05 and settings["epochs"] == 2
    assert settings["precision"] == "fp32" and settings["device"] == "cpu"
    assert settings["train_data"] == tiny_splits.train.fingerprint()
    assert settings["test_data"] == tiny_splits.test.fingerprint()
    assert not set(REPORT_ONLY) & set(settings)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["train_images"] == 64
    assert summary["test_acc"] == pytest.approx(res.history[-1]["test_acc"])
    assert summary["precision"] == "fp32" and summary["device"] == "cpu"
    loaded = load_model(out / "model.safetensors", expect_arch="fastnet", expect_classes=4)
    assert torch.equal(predict(loaded, tiny_splits.test.images), predict(res.model, tiny_splits.test.images))
    assert accuracy(loaded, tiny_splits.test) == pytest.approx(summary["test_acc"])
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # atomic writes leave nothing


def test_training_learns_the_synthetic_task(tiny_splits):
    # the class is written in the red channel's mean: a learnable task
    data = DataSplits(make_set(256, seed=0), make_set(128, seed=1), "syn")
    res = run(data, tiny_config(epochs=6, lr=0.05, schedule="onecycle", batch_size=32, crop_pad=0, flip=False))
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    # measured 0.54-0.77 over data/init seeds 0-4; chance is 0.25
    assert res.summary["test_acc"] > 0.4


def test_eval_every_and_callback_metrics(tiny_splits):
    seen = []

    def cb(model, epoch):
        seen.append((epoch, model.training))
        return {"extra": float(epoch * 10)}

    res = run(tiny_splits, tiny_config(epochs=3, eval_every=2), epoch_callback=cb, eval_train_set=tiny_splits.train)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert ["test_acc" in h for h in res.history] == [False, True, True]  # epoch 2 and the last
    assert [h["extra"] for h in res.history] == [10.0, 20.0, 30.0]
    assert res.summary["train_acc_clean"] == accuracy(res.model, tiny_splits.train, precision="fp32")


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny_splits):
    cfg = tiny_config(epochs=3)
    full = run(tiny_splits, cfg, out_dir=tmp_path / "full")

    class Interrupt(Exception):
        pass

    def crash(model, epoch):
        if epoch == 2:
            raise Interrupt  # epoch 2 has trained but its checkpoint is not written yet
        return {}

    out = tmp_path / "cut"
    with pytest.raises(Interrupt):
        run(tiny_splits, tiny_config(epochs=3), out_dir=out, epoch_callback=crash)
    ck = json.loads((out / "checkpoint.json").read_text())
    assert ck["epoch"] == 1  # the run really stopped mid-way
    assert not (out / "model.safetensors").exists()

    # a copy of the interrupted run whose checkpoint lost its momentum buffers
    shutil.copytree(out, tmp_path / "no-momentum")
    tensors, meta = load_tensors(tmp_path / "no-momentum" / "checkpoint.safetensors")
    assert any(k.startswith("opt.momentum.") for k in tensors)
    save_tensors(tmp_path / "no-momentum" / "checkpoint.safetensors",
                 {k: v for k, v in tensors.items() if not k.startswith("opt.")}, meta)

    # a fresh model with another init: everything must come from the checkpoint
    resumed = run(tiny_splits, tiny_config(epochs=3), out_dir=out, resume=True, model=fresh_model(seed=123))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in row.items() if k != "wall_s"} for row in h]  # noqa: E731
    assert len(resumed.history) == 3
    assert strip(resumed.history) == strip(full.history)
    with open(out / "metrics.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3

    # the comparison is sharp enough to notice a resume that forgets the optimizer's state
    partial = run(tiny_splits, tiny_config(epochs=3), out_dir=tmp_path / "no-momentum", resume=True,
                  model=fresh_model(seed=123)).model.state_dict()
    assert not all(torch.equal(a[k], partial[k]) for k in a)


class _DropoutNet(ImageClassifier):
    """A tiny net whose training draws from torch's global RNG (dropout)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward_normalized(self, x):
        return self.fc(self.body(x))


def test_resume_replays_global_randomness(tmp_path, tiny_splits, monkeypatch):
    from siba import models

    monkeypatch.setitem(models.MODELS, "dropnet", lambda num_classes=10, **kw: _DropoutNet(num_classes))
    make = lambda seed=0: (torch.manual_seed(seed), create_model("dropnet", 4))[1]  # noqa: E731
    cfg = lambda: tiny_config(epochs=3, lr=0.1)  # noqa: E731
    full = run(tiny_splits, cfg(), model=make())

    def crash(model, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return {}

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_splits, cfg(), out_dir=out, epoch_callback=crash, model=make())
    resumed = run(tiny_splits, cfg(), out_dir=out, resume=True, model=make(5))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # not vacuous: another seed (order and dropout masks) ends elsewhere
    other = run(tiny_splits, tiny_config(epochs=3, lr=0.1, seed=1), model=make()).model.state_dict()
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_resume_of_a_finished_run_trains_no_more(tmp_path, tiny_splits):
    out = tmp_path / "done"
    first = run(tiny_splits, tiny_config(epochs=2), out_dir=out)
    again = run(tiny_splits, tiny_config(epochs=2), out_dir=out, resume=True, model=fresh_model(seed=9))
    assert len(again.history) == 2
    sd1, sd2 = first.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_resume_without_checkpoint_starts_afresh(tmp_path, tiny_splits):
    res = run(tiny_splits, tiny_config(epochs=1), out_dir=tmp_path / "new", resume=True)
    assert len(res.history) == 1 and (tmp_path / "new" / "model.safetensors").is_file()


def test_resume_into_a_checkpoint_of_another_architecture(tmp_path, tiny_splits):
    out = tmp_path / "run"
    run(tiny_splits, tiny_config(epochs=1), out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    torch.manual_seed(0)
    other = create_model("resnet18", 4, width=4)
    with pytest.raises(SibaError, match="another model"):
        run(tiny_splits, tiny_config(epochs=2), out_dir=out, resume=True, model=other)
    with pytest.raises(SibaError, match="another model"):
        run(tiny_splits, tiny_config(epochs=2), out_dir=out, resume=True, model=fresh_model(widths=(8, 8, 8, 8)))
    with pytest.raises(SibaError, match="seed=0, not seed=1"):
        run(tiny_splits, tiny_config(epochs=1, seed=1), out_dir=out, resume=True)
    with pytest.raises(SibaError, match="batch_size=16, not batch_size=8"):
        run(tiny_splits, tiny_config(epochs=1, batch_size=8), out_dir=out, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing rewritten


def test_class_count_mismatch_and_empty_data(tiny_splits):
    with pytest.raises(SibaError, match="10 outputs but the data has 4 classes"):
        run(tiny_splits, tiny_config(), model=fresh_model(num_classes=10))
    empty = tiny_splits.train.subset([])
    with pytest.raises(SibaError, match="empty"):
        train(fresh_model(), empty, None, tiny_config(), device="cpu", progress=False, log=quiet)


def test_divergence_is_reported(tiny_splits):
    with pytest.raises(SibaError, match="diverged at epoch 1, batch"):
        run(tiny_splits, tiny_config(epochs=1, lr=1e30, schedule="constant"))


def test_a_non_finite_batch_loss_stops_the_run_at_that_batch(tmp_path, tiny_splits):
    """The model's 7th forward pass (epoch 1: 4 batches and 1 evaluation pass; then epoch 2, batch 2 of 4)
    gives NaN logits: the run stops right there, says where, and leaves epoch 1's files as they were."""
    model = fresh_model()
    calls = []

    def nan_on_the_seventh_call(module, args, output):
        calls.append(1)
        return output * float("nan") if len(calls) == 7 else output

    model.register_forward_hook(nan_on_the_seventh_call)
    out = tmp_path / "run"
    with pytest.raises(SibaError) as exc:
        run(tiny_splits, tiny_config(epochs=3), out_dir=out, model=model)
    assert str(exc.value) == ("training diverged at epoch 2, batch 2 of 4 (the loss is not finite); lower the "
                              "learning rate, or check the model's weights")
    assert len(calls) == 7  # no forward pass after that batch
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1
    with open(out / "metrics.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1"]
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()


def test_nan_weights_stop_the_run_at_the_first_batch(tmp_path, tiny_splits):
    model = fresh_model()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    out = tmp_path / "nan"
    with pytest.raises(SibaError, match="^training diverged at epoch 1, batch 1 of 4 "):
        run(tiny_splits, tiny_config(epochs=2), out_dir=out, model=model)
    assert len(calls) == 1 and not out.exists()  # one batch, and nothing written


def test_zero_epochs_evaluates_the_initial_model(tiny_splits):
    res = run(tiny_splits, tiny_config(epochs=0), model=fresh_model(seed=3))
    assert res.history == []
    initial = fresh_model(seed=3).to(memory_format=torch.channels_last)
    assert res.summary["test_acc"] == accuracy(initial, tiny_splits.test, precision="fp32")
    trained = run(tiny_splits, tiny_config(epochs=0), model=fresh_model(seed=4)).summary["test_acc"]
    assert trained != res.summary["test_acc"]  # another initial model scores otherwise on these 32 images


@pytest.mark.slow
def test_real_training_on_cifar10_mini():
    from siba.data import load_dataset

    data = load_dataset("cifar10-mini")
    torch.manual_seed(0)
    model = create_model("fastnet", 10, widths=(16, 32, 64, 128))
    cfg = TrainConfig(epochs=4, batch_size=128, lr=0.2, schedule="onecycle", seed=0, eval_every=0)
    res = train(model, data.train, data.test, cfg, device="cpu", progress=False, log=quiet)
    # measured 0.51 (seeds 0 and 1) on a 2-core CPU; chance is 0.10
    assert res.summary["test_acc"] > 0.35
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_predict_with_tta_uses_the_image_and_its_mirror():
    from siba.training import predict

    torch.manual_seed(0)
    model = create_model("fastnet", 10, widths=[8, 8, 8, 8]).eval()
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    x = images.float() / 255
    with torch.no_grad():
        expect = (model(x) + model(x.flip(3))).argmax(1)
        plain = model(x).argmax(1)
    assert torch.equal(predict(model, images, tta=True, precision="fp32"), expect)
    assert torch.equal(predict(model, images, precision="fp32"), plain)
    # the mirror image's TTA prediction is the same (the pair is the same set of two images)
    assert torch.equal(predict(model, images.flip(3), tta=True, precision="fp32"), expect)


# --------------------------------------------------------------------------- resume checks


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


OTHER_TRAIN = make_set(64, seed=7, name="train")
OTHER_TEST = make_set(32, seed=8, name="test")


@pytest.mark.parametrize("first, again, message", [
    pytest.param({}, {"lr": 0.2}, "was made with lr=0.05, not lr=0.2; use another --out or the same settings",
                 id="lr"),
    pytest.param({}, {"epochs": 2}, "was made with epochs=1, not epochs=2; only a run with schedule: constant can "
                 "be extended (the step and onecycle learning rates depend on the number of epochs); use another "
                 "--out or the same settings", id="epochs-step"),
    pytest.param({"schedule": "onecycle"}, {"schedule": "onecycle", "epochs": 2},
                 "was made with epochs=1, not epochs=2; only a run with schedule: constant", id="epochs-onecycle"),
    pytest.param({}, {"crop_pad": 2}, "was made with crop_pad=1, not crop_pad=2;", id="crop_pad"),
    pytest.param({}, {"flip": False}, "was made with flip=True, not flip=False;", id="flip"),
    pytest.param({}, {"model": (8, 8, 8, 8)}, "is of another model (widths=[8, 16, 16, 32], not widths=[8, 8, 8, 8]); "
                 "use another --out or the same settings", id="model-kwargs"),
    pytest.param({}, {"train": OTHER_TRAIN}, f"was made on other training data (fingerprint "
                 f"{make_set(64, seed=0).fingerprint()} vs {OTHER_TRAIN.fingerprint()}); use another --out",
                 id="train-data"),
    pytest.param({}, {"test": OTHER_TEST}, "was made on other test data (fingerprint", id="test-data"),
    pytest.param({}, {"test": None}, "was made on other test data (fingerprint ", id="no-test-data"),
    pytest.param({}, {"precision": "bf16"}, "was made with precision=fp32, not precision=bf16;", id="precision"),
])
def test_resume_with_other_settings_is_refused_before_writing(tmp_path, tiny_splits, first, again, message):
    out = tmp_path / "run"
    run(tiny_splits, tiny_config(epochs=1, **first), out_dir=out)
    before = _snapshot(out)
    kw = {k: v for k, v in again.items() if k not in ("model", "train", "test")}
    model = fresh_model(widths=again["model"]) if "model" in again else None
    with pytest.raises(SibaError) as exc:
        train(model or fresh_model(), again.get("train", tiny_splits.train), again.get("test", tiny_splits.test),
              tiny_config(**{"epochs": 1, **first, **kw}), out_dir=out, resume=True, device="cpu", progress=False,
              log=quiet)
    text = str(exc.value)
    assert text.startswith(f"the checkpoint in {out} ") and message in text and "\n" not in text, text
    assert _snapshot(out) == before  # the checkpoint, metrics.csv, model and summary untouched


def test_report_only_settings_may_change_on_resume(tmp_path, tiny_splits):
    """eval_every, eval_batch_size and tta change only what is reported, and precision is compared as
    resolved: ``auto`` is the fp32 of the checkpoint where it resolves to fp32."""
    from siba.runtime import resolve_precision

    out = tmp_path / "run"
    run(tiny_splits, tiny_config(epochs=1), out_dir=out)
    precision = "auto" if resolve_precision("auto", torch.device("cpu")) == "fp32" else "fp32"
    res = run(tiny_splits, tiny_config(epochs=1, eval_every=0, eval_batch_size=7, tta=True, precision=precision),
              out_dir=out, resume=True)
    assert len(res.history) == 1  # accepted: the finished run is reused, not retrained


def test_a_constant_schedule_run_extends_bit_identically(tmp_path, tiny_splits):
    cfg = lambda epochs: tiny_config(epochs=epochs, schedule="constant")  # noqa: E731
    whole = run(tiny_splits, cfg(3), out_dir=tmp_path / "whole")
    out = tmp_path / "extended"
    short = run(tiny_splits, cfg(2), out_dir=out).model.state_dict()
    short = {k: v.clone() for k, v in short.items()}
    extended = run(tiny_splits, cfg(3), out_dir=out, resume=True, model=fresh_model(seed=5))
    a, b = whole.model.state_dict(), extended.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in extended.history] == [h["train_loss"] for h in whole.history]
    assert not all(torch.equal(a[k], short[k]) for k in a)  # the third epoch did train
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 3
    # a checkpoint past the asked epochs cannot become a shorter run
    before = _snapshot(out)
    with pytest.raises(SibaError, match=r"has trained 3 epochs, more than epochs=2; use another --out or epochs ≥ 3$"):
        run(tiny_splits, cfg(2), out_dir=out, resume=True)
    assert _snapshot(out) == before


def test_a_checkpoint_without_recorded_settings_is_refused(tmp_path, tiny_splits):
    out = tmp_path / "old"
    run(tiny_splits, tiny_config(epochs=1), out_dir=out)
    tensors, meta = load_tensors(out / "checkpoint.safetensors")
    old_state = {k: meta["state"][k] for k in ("epoch", "history", "wall_s", "config", "model")}  # as siba 0.x wrote
    save_tensors(out / "checkpoint.safetensors", tensors, {"state": old_state})
    before = _snapshot(out)
    with pytest.raises(SibaError) as exc:
        run(tiny_splits, tiny_config(epochs=2), out_dir=out, resume=True)
    assert str(exc.value) == (f"the checkpoint in {out} was made by an older siba that did not record its settings, "
                              f"so it cannot be checked; train into another --out (or delete {out}/checkpoint.* to "
                              "start over)")
    assert _snapshot(out) == before


def test_siba_train_resume_with_other_settings_is_one_line_and_exit_2(tmp_path, capsys):
    from siba.cli.main import main

    from .test_cli import TINY, make_data

    data = make_data(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *TINY, "--lr", "0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"siba: error: the checkpoint in {out} was made with lr=0.1, not lr=0.2; use another --out or the "
                   "same settings"]
    assert _snapshot(out) == before
    # the step schedule's run cannot be extended; a constant one can
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *TINY, "--epochs", "2"]) == 2
    assert "only a run with schedule: constant can be extended" in capsys.readouterr().err
    assert _snapshot(out) == before
