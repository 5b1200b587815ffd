"""Bad settings in a run config or an attack: a one-line error at parse time, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from siba.attacks import create_attack
from siba.errors import SibaError
from siba.experiments import load_config, parse_config

from .test_cli import expect_user_error
from .test_pipeline import smoke_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def parse_error(**changes) -> str:
    with pytest.raises(SibaError) as exc:
        parse_config(smoke_config(**changes), "cfg.yaml")
    return str(exc.value)


# --------------------------------------------------------------------------- training numbers


def test_numbers_that_yaml_reads_as_text_are_accepted(tmp_path):
    text = (CONFIGS / "smoke.yaml").read_text().replace(
        "train: {epochs: 1, batch_size: 256, lr: 0.2,",
        "train: {epochs: 1, batch_size: 256, lr: 1e-3, weight_decay: 5e-4, gamma: 1e-1, milestones: [1e0],")
    assert "lr: 1e-3" in text
    assert isinstance(yaml.safe_load(text)["victim"]["train"]["lr"], str)  # the reason for the coercion
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    cfg = load_config(path)
    for stage in (cfg.surrogate, cfg.victim):
        assert stage.train.lr == 1e-3 and isinstance(stage.train.lr, float)
        assert stage.train.weight_decay == 5e-4 and stage.train.gamma == 0.1
        assert stage.train.milestones == [1] and isinstance(stage.train.milestones[0], int)


@pytest.mark.parametrize("train, needle", [
    ({"lr": "abc"}, "victim.train: lr must be a number, got 'abc'"),
    ({"weight_decay": "fast"}, "weight_decay must be a number, got 'fast'"),
    ({"weight_decay": -1e-4}, "weight decay must be ≥ 0"),
    ({"momentum": 1.0}, "momentum must be in [0, 1)"),
    ({"momentum": -0.1}, "momentum must be in [0, 1)"),
    ({"gamma": 0}, "gamma (the step schedule's lr factor) must be positive"),
    ({"warmup": -0.1}, "warmup (the one-cycle share of steps rising to lr) must be in [0, 1]"),
    ({"warmup": 1.5}, "must be in [0, 1], got 1.5"),
    ({"epochs": "many"}, "epochs must be a whole number, got 'many'"),
    ({"batch_size": 2.5}, "batch_size must be a whole number, got 2.5"),
    ({"eval_every": -1}, "eval_every must be ≥ 0"),
    ({"eval_batch_size": 0}, "eval batch size must be positive"),
    ({"milestones": ["x"]}, "milestones must be a whole number, got 'x'"),
    ({"milestones": 5}, "milestones must be a list of epochs"),
    ({"seed": "abc"}, "seed must be a whole number, got 'abc'"),
])
def test_bad_training_numbers_fail_at_parse_time(train, needle):
    raw = smoke_config()
    raw["victim"]["train"].update(train)
    with pytest.raises(SibaError) as exc:
        parse_config(raw, "cfg.yaml")
    assert needle in str(exc.value)


def test_bad_training_number_in_a_yaml_file_writes_nothing(tmp_path, capsys):
    text = (CONFIGS / "smoke.yaml").read_text().replace("lr: 0.2", "lr: 1e-3, weight_decay: abc")
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    out = tmp_path / "run"
    expect_user_error(capsys, ["run", str(path), "--out", str(out), "--quiet"],
                      "surrogate.train: weight_decay must be a number, got 'abc'")
    assert not out.exists()


# --------------------------------------------------------------------------- top-level and stage keys


@pytest.mark.parametrize("change, needle", [
    ({"seed": "abc"}, "cfg.yaml: seed must be a whole number, got 'abc'"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"image_size": 0}, "image_size must be null or a number of pixels ≥ 1, got 0"),
    ({"image_size": "big"}, "image_size must be null or a number of pixels ≥ 1, got 'big'"),
    ({"image_size": 32.5}, "image_size must be null or a number of pixels ≥ 1, got 32.5"),
    ({"victim": {"fraction": "abc"}}, "victim.fraction must be a number"),
    ({"surrogate": {"fraction": 0}}, "surrogate.fraction must be in (0, 1]"),
    ({"victim": {"model": "fastnet", "model_args": {"bogus": 1}}},
     "victim.model_args: bad options for model 'fastnet'"),
    ({"victim": {"model": "fastnet", "model_args": {"widths": [8, 8]}}}, "victim.model_args: bad options"),
    ({"victim": {"model": "resnet18", "model_args": {"stem": "big"}}}, "stem must be 'cifar' or 'imagenet'"),
    ({"victim": {"model": "resnet18", "model_args": {"width": -3}}}, "victim.model_args: bad options"),
    ({"victim": {"model": "fastnet", "model_args": [8, 8]}}, "victim.model_args must be a mapping"),
    ({"victim": {"model": "fastnet", "train": [1]}}, "victim.train must be a mapping"),
])
def test_bad_run_settings_fail_at_parse_time(change, needle):
    assert needle in parse_error(**change)


def test_seed_and_image_size_that_are_fine():
    cfg = parse_config(smoke_config(seed="3", image_size=32), "cfg.yaml")
    assert cfg.seed == 3 and cfg.image_size == 32 and cfg.victim.train.seed == 3
    cfg = parse_config(smoke_config(victim={"model": "fastnet", "fraction": "1/2",
                                            "model_args": {"widths": [8, 8, 8, 8]}}), "cfg.yaml")
    assert cfg.victim.fraction == 0.5 and cfg.victim.model_args == {"widths": [8, 8, 8, 8]}


def test_model_args_are_checked_without_real_weights():
    """The check builds the model on the meta device: huge widths cost no memory."""
    cfg = parse_config(smoke_config(victim={"model": "resnet18", "model_args": {"width": 4096}}), "cfg.yaml")
    assert cfg.victim.model_args == {"width": 4096}


@pytest.mark.parametrize("change, needle", [
    ({"seed": "abc"}, "seed must be a whole number, got 'abc'"),
    ({"victim": {"fraction": "abc"}}, "victim.fraction must be a number"),
    ({"image_size": -1}, "image_size must be null or a number of pixels ≥ 1"),
    ({"victim": {"model": "fastnet", "model_args": {"bogus": 1}}}, "victim.model_args: bad options"),
    ({"attacks": {"siba": {"precision": "fp16"}}}, "unknown precision 'fp16'"),
    ({"attacks": {"badnets": {"margin": "abc"}}}, "margin must be a whole number of pixels ≥ 0, got 'abc'"),
])
def test_run_with_bad_settings_writes_nothing(tmp_path, capsys, change, needle):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(smoke_config(**change)))
    out = tmp_path / "run"
    expect_user_error(capsys, ["run", str(path), "--out", str(out), "--quiet"], needle)
    assert not out.exists()


# --------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("name", ["siba", "sparse", "tuap"])
def test_attack_precision_is_checked_at_construction(name):
    with pytest.raises(SibaError, match=r"unknown precision 'fp16' \(use auto, bf16 or fp32\)"):
        create_attack(name, precision="fp16")
    assert create_attack(name, precision="bf16").precision == "bf16"


@pytest.mark.parametrize("margin", ["abc", 1.5, -1, True, None])
def test_badnets_margin_must_be_a_whole_number(margin):
    with pytest.raises(SibaError) as exc:
        create_attack("badnets", margin=margin)
    assert str(exc.value) == f"margin must be a whole number of pixels ≥ 0, got {margin!r}"


def test_badnets_margin_from_the_command_line():
    from siba.cli.main import _kv

    key, value = _kv("margin=2")  # --set margin=2 reads the number as YAML does
    assert create_attack("badnets", **{key: value}).margin == 2
    with pytest.raises(SibaError, match="margin must be a whole number"):
        create_attack("badnets", **dict([_kv("margin=2.5")]))
