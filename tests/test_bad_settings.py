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
    ({"image_size": 0}, "image_size must be null or a number of pixels from 1 to 1024, got 0"),
    ({"image_size": "big"}, "image_size must be null or a number of pixels from 1 to 1024, got 'big'"),
    ({"image_size": 32.5}, "image_size must be null or a number of pixels from 1 to 1024, got 32.5"),
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


# Each of these was accepted (read as something else) or crashed with a traceback before the fuzzing of
# tests/test_config_fuzz.py found it; each is now a one-line error at parse time that names the setting.
@pytest.mark.parametrize("change, needle", [
    ({"all_to_all": "false"}, "cfg.yaml: all_to_all must be true or false, got 'false'"),  # was: true
    ({"export": 0}, "cfg.yaml: export must be true or false, got 0"),
    ({"victim": {"train": {"flip": "no"}}}, "victim.train: flip must be true or false, got 'no'"),  # was: flips on
    ({"victim": {"train": {"tta": None}}}, "victim.train: tta must be true or false, got None"),
    ({"victim": {"model_args": []}}, "victim.model_args must be a mapping of options"),  # was: {}
    ({"victim": {"train": ""}}, "victim.train must be a mapping of training options, got ''"),  # was: {}
    ({"attacks": {"siba": [["k", 5]]}}, "attacks.siba must be a mapping of the attack's settings"),  # was: {k: 5}
    ({"attacks": {"siba": 5}}, "attacks.siba must be a mapping"),  # was: TypeError
    ({"attacks": {"siba": {"attack": ["siba"]}}}, "attacks.siba: unknown attack ['siba']"),  # was: TypeError
    ({"attacks": {"siba": {"seed": "abc"}}}, "attacks.siba: seed must be a whole number in [0, 2**32), got 'abc'"),
    ({"attacks": {"siba": {"seed": 2 ** 64}}}, "seed must be a whole number in [0, 2**32)"),
    ({"attacks": {"siba": {"all_to_all": "yes"}}}, "attacks.siba: all_to_all must be true or false, got 'yes'"),
    ({"attacks": {"siba": {"max_images": True}}}, "attacks.siba: max_images must be a whole number ≥ 1, got True"),
    ({"attacks": {"siba": {"eps": 10 ** 400}}}, "attacks.siba: eps must be a number"),  # was: OverflowError
    ({"surrogate": {"fraction": 10 ** 400}}, "surrogate.fraction must be a number"),  # was: OverflowError
    ({"attacks": {"..": {"attack": "badnets"}}}, "an attack's name must be at most 100 letters"),  # a folder above
    ({"attacks": {"a@b": {"attack": "badnets"}}}, "got 'a@b'"),  # --only a@b@0.05 could not split it
    ({"attacks": {"clean": {"attack": "badnets"}}}, "'clean' names the clean baseline"),
    ({"attacks": {7: {"attack": "badnets"}}}, "an attack's name must be at most 100 letters"),
    ({"precision": "bf16"}, "unknown key(s) precision; known:"),  # was: accepted and ignored
    ({"rate": 0.1}, "cfg.yaml: give rates or rate, not both"),  # was: rate ignored
    ({"rates": [0.05, 0.05]}, "cfg.yaml: rates holds 0.05 twice"),
    ({"rates": [0.05, 0.05000001]}, "rates holds 0.05 twice"),  # both would be victims/<attack>-r0.05
    ({"seed": 2 ** 32}, "cfg.yaml: seed must be a whole number in [0, 2**32), got 4294967296"),  # torch overflow
    ({"seed": -1}, "seed must be a whole number in [0, 2**32), got -1"),
    ({"victim": {"train": {"seed": 10 ** 30}}}, "victim.train: seed must be a whole number in [0, 2**32)"),
    ({"victim": {"train": {"epochs": 10 ** 400}}}, "victim.train: epochs must be at most 1,000,000"),
    ({"victim": {"train": {"crop_pad": 10 ** 30}}}, "victim.train: crop padding must be at most 256 pixels"),
    ({"image_size": 10 ** 30}, "image_size must be null or a number of pixels from 1 to 1024"),
    ({"victim": {"model_args": {"widths": [10 ** 30] * 4}}}, "victim.model_args: bad options for model 'fastnet'"),
    ({"device": "meta"}, "cfg.yaml: device must be auto, cpu, cuda or cuda:N, got 'meta'"),
    ({"device": 0}, "device must be auto, cpu, cuda or cuda:N, got 0"),
    ({"name": "a/b"}, "cfg.yaml: name must be a folder name of at most 100 characters, without / or \\"),
    ({"name": ["demo"]}, "name must be a folder name"),  # was: the folder "['demo']"
    ({"data": ["cifar10-mini"]}, "cfg.yaml: data must be a file path, got ['cifar10-mini']"),
    ({"data": "x" * 5000}, "cfg.yaml: data cannot be a file path: File name too long"),  # was: OSError
    ({"victim": {"path": "a\nb"}}, "victim.path must be a file path without control characters"),
    ({"description": ["a"]}, "description must be text"),
    ({"\x1e": 1}, "unknown key(s) '\\x1e'"),  # a key with a line break is shown as its repr: one line
    ({"victim": {"train": {"\n": 1}}}, "victim.train has a key that is not a name: '\\n'"),
])
def test_settings_once_misread_or_crashing_are_one_line_errors(change, needle):
    message = parse_error(**change)
    assert needle in message
    assert len(message.splitlines()) == 1


def test_rates_written_as_text_are_numbers():
    cfg = parse_config(smoke_config(rates=["1e-2", "1/20"]), "cfg.yaml")  # YAML reads 1e-2 as text
    assert cfg.rates == [0.01, 0.05]
    assert parse_config(smoke_config(rates=0.1), "cfg.yaml").rates == [0.1]
    assert parse_config({k: v for k, v in smoke_config(rate=0.2).items() if k != "rates"}, "c.yaml").rates == [0.2]


def test_limits_are_inclusive():
    cfg = parse_config(smoke_config(seed=2 ** 32 - 1, image_size=1024, victim={
        "train": {"epochs": 1_000_000, "crop_pad": 256}}), "cfg.yaml")
    assert cfg.seed == 2 ** 32 - 1 and cfg.image_size == 1024
    assert cfg.victim.train.epochs == 1_000_000 and cfg.victim.train.crop_pad == 256
    assert parse_config(smoke_config(device="cuda:1", name="my run"), "cfg.yaml").device == "cuda:1"


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
    ({"image_size": -1}, "image_size must be null or a number of pixels from 1 to 1024"),
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
