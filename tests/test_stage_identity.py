"""`siba run` keys every stage to the content it consumed (issue 15, item 2).

A victim is redone when its trigger's tensors change, a trigger when the surrogate's weights
change, every stage when the data's content changes (but not when the same data moves), and
``precision: auto`` enters the digests as the precision it resolves to. A ``surrogate.path`` of
another architecture, and a run folder made by an older siba, are one-line errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from siba.attacks import load_trigger
from siba.cli.main import main
from siba.experiments import parse_config
from siba.experiments.pipeline import Pipeline
from siba.models import create_model, load_model, save_model
from siba.runtime import file_sha256

TINY = {"widths": [4, 8, 8, 16]}
TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.2, "schedule": "onecycle", "eval_every": 0, "precision": "fp32"}


def _folder_data(root: Path, seed: int = 0, n_per_class: int = 24, classes: int = 3) -> Path:
    """A tiny image-folder data set (train/ and test/) of 8×8 PNGs."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_per_class), ("test", n_per_class // 3)):
        for c in range(classes):
            d = root / split / f"c{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                img[..., 0] = np.clip(img[..., 0] // 2 + 60 * c, 0, 255)
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def _config(data: Path | str, **changes) -> dict:
    raw = {"name": "ident", "data": str(data), "seed": 0, "target": 0, "rates": [0.1],
           "surrogate": {"model": "fastnet", "model_args": TINY, "train": dict(TRAIN)},
           "victim": {"model": "fastnet", "model_args": TINY, "train": dict(TRAIN)},
           "attacks": {"siba": {"k": 4, "eps": "8/255", "passes": 1, "precision": "fp32"}, "random": {"k": 4}},
           "clean_baseline": False}
    raw.update(changes)
    return raw


def _run(raw: dict, out: Path) -> tuple[dict, list[str]]:
    lines: list[str] = []
    res = Pipeline(parse_config(raw), out, progress=False, log=lines.append).run()
    return res, lines


def _redone(lines: list[str]) -> list[str]:
    return [line.split("]")[0].lstrip("[") for line in lines if "redoing it" in line]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return _folder_data(tmp_path_factory.mktemp("identity-data") / "d")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("identity-run") / "run"
    _run(_config(data_dir), out)
    return out


def _copy(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def test_unchanged_run_redoes_nothing(base_run, data_dir, tmp_path):
    out = _copy(base_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    _, lines = _run(_config(data_dir), out)
    assert _redone(lines) == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == before


def test_same_data_at_another_path_redoes_nothing(base_run, data_dir, tmp_path):
    out = _copy(base_run, tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(data_dir, moved)
    _, lines = _run(_config(moved), out)
    assert _redone(lines) == []
    assert any("done already" in line for line in lines)


def test_changed_data_redoes_every_stage(base_run, data_dir, tmp_path):
    out = _copy(base_run, tmp_path)
    changed = tmp_path / "changed"
    shutil.copytree(data_dir, changed)
    png = changed / "train" / "c1" / "000.png"
    img = np.array(Image.open(png))
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(png)
    _, lines = _run(_config(changed), out)
    assert set(_redone(lines)) == {"surrogate", "siba", "random", "siba @ 0.1", "random @ 0.1"}


def test_replaced_trigger_retrains_its_victims_only(base_run, data_dir, tmp_path):
    out = _copy(base_run, tmp_path)
    path = out / "triggers" / "random" / "trigger.safetensors"
    mark = load_trigger(path)
    mark.delta = -mark.delta  # the same budgets, another trigger
    mark.save(path)
    siba_model = (out / "victims" / "siba-r0.1" / "model.safetensors").read_bytes()
    _, lines = _run(_config(data_dir), out)
    assert _redone(lines) == ["random @ 0.1"]
    assert (out / "victims" / "siba-r0.1" / "model.safetensors").read_bytes() == siba_model
    stage = json.loads((out / "victims" / "random-r0.1" / "stage.json").read_text())
    assert stage["settings"]["trigger"] == load_trigger(path).fingerprint()


def test_changed_surrogate_weights_redo_its_triggers(base_run, data_dir, tmp_path):
    out = _copy(base_run, tmp_path)
    weights = out / "surrogate" / "model.safetensors"
    model = create_model("fastnet", 3, **TINY)
    save_model(model, weights)  # another surrogate behind an unchanged stage.json and summary
    _, lines = _run(_config(data_dir), out)
    assert set(_redone(lines)) == {"siba", "siba @ 0.1"}  # Random needs no surrogate: kept


def test_trigger_keyed_to_resolved_precision(base_run, data_dir, tmp_path, monkeypatch):
    """``auto`` enters the digest as what it resolves to: a machine where it means bf16 redoes the stages."""
    out = _copy(base_run, tmp_path)
    raw = _config(data_dir)
    raw["attacks"]["siba"]["precision"] = "auto"
    raw["surrogate"]["train"]["precision"] = "auto"
    raw["victim"]["train"]["precision"] = "auto"
    monkeypatch.setattr("siba.runtime.bf16_is_fast", lambda device: False)
    _run(raw, out)  # auto → fp32 here: recorded as fp32, the same as the base run's
    stage = json.loads((out / "triggers" / "siba" / "stage.json").read_text())
    assert stage["settings"]["precision"] == "fp32"
    _, lines = _run(raw, out)
    assert _redone(lines) == []
    monkeypatch.setattr("siba.runtime.bf16_is_fast", lambda device: True)
    pipe = Pipeline(parse_config(raw), out, progress=False, log=lambda s: None)
    pipe.prepare()
    assert pipe._trigger_settings("siba")["precision"] == "bf16"
    assert pipe._surrogate_settings()["precision"] == "bf16"
    assert not pipe._matches(out / "surrogate", pipe._surrogate_settings())


def test_surrogate_path_of_another_architecture_is_refused(tmp_path, data_dir, capsys):
    other = tmp_path / "other.safetensors"
    save_model(create_model("fastnet", 3, widths=[8, 8, 16, 16]), other)
    raw = _config(data_dir)
    raw["surrogate"] = {"model": "fastnet", "model_args": TINY, "path": str(other)}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "surrogate.path" in err[0] and "model_args" in err[0], err
    assert not out.exists()
    raw["surrogate"]["model"] = "resnet18"
    raw["surrogate"].pop("model_args")
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a fastnet model, not the resnet18" in err[0], err
    assert not out.exists()


def test_surrogate_path_file_replaced_redoes_the_trigger(tmp_path, data_dir):
    path = tmp_path / "sur.safetensors"
    torch.manual_seed(0)
    save_model(create_model("fastnet", 3, **TINY), path)
    raw = _config(data_dir, attacks={"siba": {"k": 4, "eps": "8/255", "passes": 1, "precision": "fp32"}})
    raw["surrogate"] = {"model": "fastnet", "model_args": TINY, "path": str(path)}
    out = tmp_path / "run"
    _run(raw, out)
    _, lines = _run(raw, out)
    assert _redone(lines) == []
    torch.manual_seed(1)
    save_model(create_model("fastnet", 3, **TINY), path)
    _, lines = _run(raw, out)
    assert set(_redone(lines)) == {"siba", "siba @ 0.1"}


def test_run_folder_of_an_older_siba_is_refused(base_run, data_dir, tmp_path, capsys):
    out = _copy(base_run, tmp_path)
    marker = out / "config.json"
    old = json.loads(marker.read_text())
    old.pop("format")
    marker.write_text(json.dumps(old))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(data_dir)))
    listing = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "older siba" in err[0] and "--fresh" in err[0], err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == listing  # nothing touched


def _reused(lines: list[str]) -> list[str]:
    return sorted(line.split("]")[0].lstrip("[") for line in lines if "reused from" in line)


def _trained(lines: list[str]) -> list[str]:
    return sorted(line.split("]")[0].lstrip("[") for line in lines
                  if "] training " in line or "making the trigger" in line)


def test_reuse_copies_finished_stages_of_the_same_key_whatever_their_name(base_run, data_dir, tmp_path):
    raw = _config(data_dir, rates=[0.1, 0.2])
    raw["attacks"] = {"siba-k4": {"attack": "siba", "k": 4, "eps": "8/255", "passes": 1, "precision": "fp32"},
                      "random": {"k": 4}}
    out = tmp_path / "other"
    lines: list[str] = []
    res = Pipeline(parse_config(raw), out, progress=False, log=lines.append, reuse=[base_run.parent]).run()
    # everything the base run finished is copied (the surrogate, both triggers, both victims at 10%) ...
    assert _reused(lines) == ["random", "random @ 0.1", "siba-k4", "siba-k4 @ 0.1", "surrogate"]
    # ... and only the new rate's victims are trained
    assert _trained(lines) == ["random @ 0.2", "siba-k4 @ 0.2"]
    base = {r["attack"]: r for r in json.loads((base_run / "results.json").read_text())["results"]}
    rows = {(r["attack"], r["rate"]): r for r in res["results"]}
    assert rows[("siba-k4", 0.1)]["asr"] == base["siba"]["asr"] and rows[("siba-k4", 0.1)]["ba"] == base["siba"]["ba"]
    assert json.loads((out / "victims" / "siba-k4-r0.1" / "eval.json").read_text())["attack"] == "siba-k4"
    assert (out / "victims" / "siba-k4-r0.1" / "model.safetensors").read_bytes() == \
        (base_run / "victims" / "siba-r0.1" / "model.safetensors").read_bytes()
    assert not list(out.rglob(".*reusing"))
    # the copies are this run's own stages now: running again finds them done
    again: list[str] = []
    Pipeline(parse_config(raw), out, progress=False, log=again.append).run()
    assert _trained(again) == [] and _reused(again) == []


def test_reuse_copies_nothing_whose_key_differs(base_run, data_dir, tmp_path):
    raw = _config(data_dir)
    raw["victim"] = {**raw["victim"], "train": {**TRAIN, "seed": 7}}  # another victim recipe: same surrogate, triggers
    lines: list[str] = []
    Pipeline(parse_config(raw), tmp_path / "other", progress=False, log=lines.append, reuse=[base_run]).run()
    assert _reused(lines) == ["random", "siba", "surrogate"]
    assert _trained(lines) == ["random @ 0.1", "siba @ 0.1"]


def test_reuse_of_a_missing_folder_is_one_line_and_writes_nothing(data_dir, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(data_dir)))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--reuse", str(tmp_path / "nowhere"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--reuse" in err[0] and "no such folder" in err[0], err
    assert not out.exists()


def test_victim_init_starts_from_the_file_and_keys_its_content(data_dir, tmp_path, capsys):
    """`victim.init`: the training starts from the named weights (the log says so), the stage is keyed
    to the file's content (the same bytes elsewhere redo nothing, other bytes redo the victims), and a
    missing or unfitting file, or init beside path, is a one-line error before anything is written."""
    def weights(seed: int, path: Path) -> Path:
        torch.manual_seed(seed)
        torch.save(create_model("fastnet", 3, **TINY).state_dict(), path)
        return path

    first = weights(0, tmp_path / "w0.pth")
    raw = _config(data_dir, attacks={"random": {"k": 4}}, clean_baseline=True)
    # a learning rate so small that the trained weights are still the ones the training started from
    raw["victim"] = {**raw["victim"], "init": str(first), "train": {**TRAIN, "lr": 1e-9}}
    out = tmp_path / "run"
    _, lines = _run(raw, out)
    assert sorted(line.split("]")[0].lstrip("[") for line in lines if "starting from" in line and
                  "fresh: none" in line) == ["clean", "random @ 0.1"]
    start = torch.load(first, weights_only=True)
    for folder in (out / "clean", out / "victims" / "random-r0.1"):
        trained = load_model(folder / "model.safetensors").state_dict()
        assert torch.allclose(trained["fc.weight"], start["fc.weight"], atol=1e-6)
        assert torch.allclose(trained["stem.0.weight"], start["stem.0.weight"], atol=1e-6)
    stage = json.loads((out / "victims" / "random-r0.1" / "stage.json").read_text())
    assert stage["settings"]["victim"]["init"] == {"sha256": file_sha256(first)}
    assert "init" not in json.loads((out / "surrogate" / "stage.json").read_text())["settings"]["surrogate"] \
        if (out / "surrogate").exists() else True
    moved = tmp_path / "moved.pth"
    shutil.copy(first, moved)
    raw["victim"]["init"] = str(moved)
    _, lines = _run(raw, out)
    assert _redone(lines) == [] and _trained(lines) == []
    raw["victim"]["init"] = str(weights(1, moved))
    _, lines = _run(raw, out)
    assert set(_redone(lines)) == {"clean", "random @ 0.1"}

    cfg = tmp_path / "cfg.yaml"
    bad_out = tmp_path / "bad"
    other = tmp_path / "other.pth"
    torch.save(create_model("fastnet", 3, widths=[8, 8, 16, 16]).state_dict(), other)
    for init, expect in ((tmp_path / "missing.pth", "victim.init does not exist"),
                         (other, "victim.init: ")):
        raw["victim"]["init"] = str(init)
        cfg.write_text(yaml.safe_dump(raw))
        assert main(["run", str(cfg), "--out", str(bad_out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
        assert not bad_out.exists()
    raw["victim"]["init"] = str(first)
    raw["victim"]["path"] = str(first)
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(bad_out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "both path" in err[0] and "init" in err[0], err
    assert not bad_out.exists()
