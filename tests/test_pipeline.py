"""`siba run`: config checks, every stage on the shipped subset, resuming, the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from siba.cli.main import main
from siba.errors import SibaError
from siba.experiments import load_config, parse_config

from .test_cli import expect_user_error

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def smoke_config(**changes) -> dict:
    raw = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    raw.update(changes)
    return raw


def write_config(tmp_path: Path, raw: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_shipped_config_parses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a config may name another run's model (surrogate.path): stand one in
    for path in sorted(CONFIGS.glob("*.yaml")):
        model_file = (yaml.safe_load(path.read_text()).get("surrogate") or {}).get("path")
        if model_file:
            (tmp_path / model_file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / model_file).touch()
        cfg = load_config(path)
        assert cfg.attacks and cfg.rates, path
        assert cfg.surrogate.path == model_file, path


@pytest.mark.parametrize("change, needle", [
    ({"bogus": 1}, "unknown key(s) bogus"),
    ({"rates": [0.0]}, "in (0, 1)"),
    ({"rates": [1.5]}, "in (0, 1)"),
    ({"attacks": {"siba": {"k": 0}}}, "k must be"),
    ({"attacks": {"siba": {"eps": 2}}}, "eps must be in (0, 1]"),
    ({"attacks": {"nope": {}}}, "unknown attack 'nope'"),
    ({"attacks": {}}, "'attacks' must map"),
    ({"victim": {"model": "nope"}}, "unknown model 'nope'"),
    ({"victim": {"train": {"epochs": -1}}}, "epochs must be"),
    ({"victim": {"train": {"lr_typo": 1}}}, "unknown training option(s) lr_typo"),
    ({"target": -1}, "target must be"),
])
def test_config_errors(change, needle):
    with pytest.raises(SibaError) as exc:
        parse_config(smoke_config(**change), "cfg.yaml")
    assert needle in str(exc.value)


@pytest.mark.parametrize("change, needle", [
    ({"target": 10}, "target class 10 is not among the 10 classes"),
    ({"attacks": {"siba": {"k": 2000}}}, "more than the 32×32=1024 pixels"),
    ({"rates": [0.0001]}, "poisons no sample"),
    ({"data": "no/such/data"}, "unknown data set"),
])
def test_run_bad_input_writes_nothing(tmp_path, capsys, change, needle):
    cfg = write_config(tmp_path, smoke_config(**change))
    out = tmp_path / "run"
    expect_user_error(capsys, ["run", str(cfg), "--out", str(out), "--quiet"], needle)
    assert not out.exists()


@pytest.mark.parametrize("only, needle", [
    ("nope", "no attack 'nope' in the config"),
    ("siba@0.5", "rate 0.5 is not among the config's rates (0.05)"),
    ("siba@x", "'x' is not a rate"),
])
def test_run_only_bad_selection_writes_nothing(tmp_path, capsys, only, needle):
    out = tmp_path / "run"
    expect_user_error(capsys, ["run", str(CONFIGS / "smoke.yaml"), "--out", str(out), "--quiet", "--only", only],
                      needle)
    assert not out.exists()


def test_run_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    expect_user_error(capsys, ["run", str(CONFIGS / "smoke.yaml"), "--out", str(tmp_path / "busy"), "--quiet"],
                      "not a siba run folder")


@pytest.fixture(scope="module")
def smoke_base(tmp_path_factory):
    """One smoke run, made once per module; a test that changes a run works on its own copy (smoke_run)."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("SIBA_CACHE", str(tmp_path_factory.getbasetemp() / "siba-cache"))
    try:
        rc = main(["run", str(CONFIGS / "smoke.yaml"), "--out", str(out), "--quiet", "--device", "cpu"])
    finally:
        mp.undo()
    assert rc == 0
    return out


@pytest.fixture
def smoke_run(smoke_base, tmp_path):
    """A private copy of the smoke run: the tests that rerun, prune or extend it pass in any order."""
    out = tmp_path / "run"
    shutil.copytree(smoke_base, out)
    return out


def _saved_model(path: Path):
    """A model as the pipeline held it when it measured it (channels_last, as training leaves it)."""
    import torch

    from siba.models import load_model

    return load_model(path, "cpu").to(memory_format=torch.channels_last)


def test_smoke_run_writes_every_artifact(smoke_base):
    out = smoke_base
    for rel in ("config.json", "surrogate/model.safetensors", "surrogate/metrics.csv", "triggers/siba/trigger.png",
                "triggers/siba/trigger.safetensors", "triggers/badnets/trigger.json", "victims/siba-r0.05/eval.json",
                "victims/siba-r0.05/poison.json", "victims/badnets-r0.05/model.safetensors", "results.json",
                "report.md"):
        assert (out / rel).is_file(), rel
    results = json.loads((out / "results.json").read_text())
    rows = {r["attack"]: r for r in results["results"]}
    assert set(rows) == {"siba", "badnets"}
    for r in rows.values():
        assert {"attack", "rate", "ba", "asr", "clean_ba", "train_acc", "l0", "linf", "ssim", "psnr", "wall_s",
                "command"} <= set(r)
        assert r["rate"] == 0.05 and r["num_poisoned"] == 250
    assert rows["siba"]["l0_max"] <= 100 and rows["siba"]["linf"] <= 8 / 255 + 1e-6
    assert rows["siba"]["l0_max_quantized"] <= 100 and rows["siba"]["linf_quantized"] <= 8 / 255 + 1e-6
    poison = json.loads((out / "victims/siba-r0.05/poison.json").read_text())
    assert poison["num_poisoned"] == 250 and len(poison["poisoned_indices"]) == 250
    report = (out / "report.md").read_text()
    assert "| siba | 5% |" in report and "triggers/siba/trigger.png" in report


def test_smoke_results_are_what_the_saved_victims_and_triggers_give(smoke_base):
    """Every number of a results row, recomputed from the files the run saved: the victim's weights, the
    trigger and the seeded poisoned set (the same device and precision, so equal to the last bit)."""
    from siba.attacks import load_trigger
    from siba.data import load_dataset
    from siba.metrics import evaluate_attack
    from siba.poisoning import poison_dataset
    from siba.training import accuracy, predict

    data = load_dataset("cifar10-mini")
    rows = {r["attack"]: r for r in json.loads((smoke_base / "results.json").read_text())["results"]}
    for name, row in rows.items():
        victim = smoke_base / "victims" / f"{name}-r0.05"
        model = _saved_model(victim / "model.safetensors")
        mark = load_trigger(smoke_base / "triggers" / name / "trigger.safetensors")
        ev = evaluate_attack(model, data.test, mark, device="cpu")
        for key in ("ba", "asr", "asr_quantized", "asr_by_class", "n_attacked", "l0", "l0_max", "linf", "ssim",
                    "psnr", "l0_max_quantized", "linf_quantized"):
            assert row[key] == ev[key], (name, key)
        assert json.loads((victim / "eval.json").read_text()) == row
        poisoned = poison_dataset(data.train, mark, 0.05, seed=0)
        assert poisoned.indices.tolist() == json.loads((victim / "poison.json").read_text())["poisoned_indices"]
        assert row["train_acc"] == accuracy(model, poisoned.data)
        hits = predict(model, poisoned.data.images[poisoned.indices]).cpu() == poisoned.data.labels[poisoned.indices]
        assert row["poison_fit"] == hits.float().mean().item()
    assert rows["badnets"]["l0_max"] == 9 and rows["badnets"]["linf"] == 1.0  # the 3×3 black-and-white patch


def test_second_run_resumes_and_redoes_only_what_is_missing(smoke_run, capsys):
    shutil.rmtree(smoke_run / "victims" / "badnets-r0.05")
    before = (smoke_run / "victims/siba-r0.05/model.safetensors").read_bytes()
    assert main(["run", str(CONFIGS / "smoke.yaml"), "--out", str(smoke_run), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "[surrogate] done already" in err and "[siba @ 0.05] done already" in err
    assert "[badnets @ 0.05] training" in err
    assert (smoke_run / "victims/badnets-r0.05/eval.json").is_file()
    assert (smoke_run / "victims/siba-r0.05/model.safetensors").read_bytes() == before


def test_changed_settings_redo_only_the_stages_they_touch(smoke_run, tmp_path, capsys):
    raw = smoke_config()
    raw["victim"]["train"]["lr"] = 0.1  # a new victim recipe: surrogate and triggers stay
    raw["rates"] = [0.05, 0.1]  # and a new rate
    cfg = write_config(tmp_path, raw)
    trigger_before = (smoke_run / "triggers/siba/trigger.safetensors").read_bytes()
    assert main(["run", str(cfg), "--out", str(smoke_run), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "[surrogate] done already" in err and "[siba] trigger done already" in err
    assert "[siba @ 0.05] settings changed since the last run" in err
    assert "[siba @ 0.1] training" in err
    assert (smoke_run / "triggers/siba/trigger.safetensors").read_bytes() == trigger_before
    stage = json.loads((smoke_run / "victims/siba-r0.05/stage.json").read_text())
    assert stage["settings"]["victim"]["train"]["lr"] == 0.1
    rows = json.loads((smoke_run / "results.json").read_text())["results"]
    assert sorted((r["attack"], r["rate"]) for r in rows) == [("badnets", 0.05), ("badnets", 0.1), ("siba", 0.05),
                                                               ("siba", 0.1)]
    assert (smoke_run / "asr_vs_rate.png").is_file()
    # a new seed changes everything
    raw["seed"] = 1
    assert main(["run", str(write_config(tmp_path, raw)), "--out", str(smoke_run), "--quiet", "--device", "cpu"]) == 0
    assert "[surrogate] settings changed" in capsys.readouterr().err


def test_run_only_trains_the_selected_victims_and_reports_every_finished_one(smoke_run, capsys):
    shutil.rmtree(smoke_run / "victims" / "badnets-r0.05")
    shutil.rmtree(smoke_run / "victims" / "siba-r0.05")
    argv = ["run", str(CONFIGS / "smoke.yaml"), "--out", str(smoke_run), "--quiet", "--device", "cpu"]
    assert main([*argv, "--only", "siba@0.05"]) == 0
    err = capsys.readouterr().err
    assert "[siba @ 0.05] training" in err and "[badnets @ 0.05] not run yet" in err
    assert not (smoke_run / "victims" / "badnets-r0.05").exists()
    rows = json.loads((smoke_run / "results.json").read_text())["results"]
    assert [r["attack"] for r in rows] == ["siba"]
    # the next selection adds its victim; the finished one is reported, not retrained
    assert main([*argv, "--only", "badnets"]) == 0
    err = capsys.readouterr().err
    assert "[badnets @ 0.05] training" in err and "[siba @ 0.05] training" not in err
    rows = json.loads((smoke_run / "results.json").read_text())["results"]
    assert sorted(r["attack"] for r in rows) == ["badnets", "siba"]


def test_an_only_selection_without_surrogate_attacks_neither_trains_nor_loads_the_surrogate(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", str(CONFIGS / "smoke.yaml"), "--out", str(out), "--quiet", "--device", "cpu"]
    assert main([*argv, "--only", "badnets"]) == 0
    assert "[surrogate] not needed" in capsys.readouterr().err
    assert not (out / "surrogate").exists() and not (out / "triggers" / "siba").exists()
    assert [r["attack"] for r in json.loads((out / "results.json").read_text())["results"]] == ["badnets"]
    # a surrogate named by a file that is not there yet: fine for badnets, a one-line error for siba
    raw = smoke_config(surrogate={"model": "fastnet", "path": str(tmp_path / "later.safetensors")})
    cfg = write_config(tmp_path, raw)
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--device", "cpu", "--only", "badnets"]) == 0
    err = capsys.readouterr().err
    assert "[surrogate] not needed" in err and "[badnets @ 0.05] done already" in err
    expect_user_error(capsys, ["run", str(cfg), "--out", str(tmp_path / "run2"), "--quiet", "--only", "siba"],
                      "surrogate.path does not exist")
    assert not (tmp_path / "run2").exists()


def test_a_clean_baseline_trained_later_gives_its_ba_to_the_finished_victims(smoke_run, tmp_path, capsys):
    raw = smoke_config(clean_baseline=True)
    raw["victim"]["train"]["lr"] = 0.3  # the victims' recipe differs from the surrogate's: a clean run of its own
    argv = ["run", str(write_config(tmp_path, raw)), "--out", str(smoke_run), "--quiet", "--device", "cpu"]
    assert main([*argv, "--only", "siba@0.05"]) == 0
    assert "[clean] not run yet" in capsys.readouterr().err
    rows = json.loads((smoke_run / "results.json").read_text())["results"]
    assert [(r["attack"], r["clean_ba"]) for r in rows] == [("siba", None)]
    assert main([*argv, "--only", "clean"]) == 0
    assert "[clean] training" in capsys.readouterr().err
    results = json.loads((smoke_run / "results.json").read_text())
    clean_ba = results["clean"]["test_acc"]
    from siba.data import load_dataset
    from siba.training import accuracy

    clean_model = _saved_model(smoke_run / "clean" / "model.safetensors")  # the clean BA is its test accuracy
    assert clean_ba == accuracy(clean_model, load_dataset("cifar10-mini").test)
    assert [(r["attack"], r["clean_ba"]) for r in results["results"]] == [("siba", clean_ba)]


def test_a_surrogate_file_for_another_number_of_classes_is_a_one_line_error_before_any_output(tmp_path, capsys):
    from siba.models import create_model, save_model

    model_file = tmp_path / "seven.safetensors"
    save_model(create_model("fastnet", 7, widths=(8, 8, 8, 8)), model_file)
    cfg = write_config(tmp_path, smoke_config(surrogate={"model": "fastnet", "path": str(model_file)}))
    out = tmp_path / "run"
    expect_user_error(capsys, ["run", str(cfg), "--out", str(out), "--quiet", "--device", "cpu"],
                      "7 classes", "10")
    assert not out.exists()


def test_an_all_to_all_run_relabels_every_class_to_the_next_and_judges_each_image_by_its_own_target(tmp_path):
    import torch

    from siba.data import load_dataset
    from siba.poisoning import load_exported

    raw = smoke_config(all_to_all=True, attacks={"badnets": {}}, rates=[0.1], export=True)
    out = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path, raw)), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    victim = out / "victims" / "badnets-r0.1"
    poison = json.loads((victim / "poison.json").read_text())
    assert poison["target_rule"] == "all-to-all" and poison["num_poisoned"] == 500  # ⌊0.1 · 5,000⌋, any class
    chosen, original = torch.tensor(poison["poisoned_indices"]), torch.tensor(poison["original_labels"])
    assert len(set(original.tolist())) == 10  # every class is poisoned, the all-to-one target's too
    clean = load_dataset("cifar10-mini").train
    assert torch.equal(clean.labels[chosen], original)
    exported = load_exported(victim / "poisoned")  # the poisoned set as the victim saw it, read back from PNGs
    assert torch.equal(exported.labels[chosen], (original + 1) % 10)
    rest = torch.ones(len(clean), dtype=torch.bool)
    rest[chosen] = False
    assert torch.equal(exported.labels[rest], clean.labels[rest])
    assert torch.equal(exported.images[rest], clean.images[rest])
    assert (exported.images[chosen] != clean.images[chosen]).flatten(1).any(1).all()
    ev = json.loads((victim / "eval.json").read_text())
    assert ev["n_attacked"] == ev["n_test"] == 1000  # every test image, towards (y+1) mod 10
    assert all(a is not None for a in ev["asr_by_class"])
    assert "all-to-all" in (out / "report.md").read_text()


def test_train_fraction_gives_every_stage_the_same_stratified_subset(tmp_path, capsys):
    """``train_fraction`` trains the victims on a seeded, class-stratified share of the training set
    (poisoning a share of *that* set), keeps the test set whole, and records the victim's recipe."""
    out = tmp_path / "run"
    cfg = write_config(tmp_path, smoke_config(train_fraction=0.2))
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--device", "cpu", "--only", "badnets"]) == 0
    row = json.loads((out / "victims" / "badnets-r0.05" / "eval.json").read_text())
    assert row["train_size"] == 1000  # 20% of the shipped subset's 5,000, 100 per class
    assert row["num_poisoned"] == 50  # 5% of those 1,000
    assert (row["crop_pad"], row["flip"], row["epochs"]) == (4, True, 1)  # the smoke recipe's defaults
    manifest = json.loads((out / "victims" / "badnets-r0.05" / "poison.json").read_text())
    assert manifest["num_images"] == 1000 and max(manifest["poisoned_indices"]) < 1000
    capsys.readouterr()
    expect_user_error(capsys, ["run", str(write_config(tmp_path, smoke_config(train_fraction=1.5), "bad.yaml")),
                               "--out", str(tmp_path / "bad"), "--quiet"], "train_fraction must be in (0, 1]")
    assert not (tmp_path / "bad").exists()
