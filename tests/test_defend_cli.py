"""`siba defend`: defenses against what a run saved, or against a model and data a user names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from siba.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    raw = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    raw["attacks"] = {"badnets": {"size": 6}}
    raw["rates"] = [0.1]
    raw["victim"]["train"].update(epochs=3, crop_pad=0)
    raw["train_fraction"] = 0.6  # defend must rebuild the poisoned set from the same subset the run drew
    base = tmp_path_factory.mktemp("defend")
    cfg = base / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = base / "run"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    return out


def test_defend_a_run_victim_writes_results_and_a_summary(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert main(["defend", "strip", str(run), "--victim", "badnets@0.1", "--set", "n=4", "--val-size", "200",
                 "--quiet"]) == 0
    res = json.loads((run / "defenses" / "strip" / "badnets-r0.1" / "result.json").read_text())
    assert res["defense"] == "strip" and res["kind"] == "detection"
    assert 0 <= res["metrics"]["auroc"] <= 1 and res["settings"]["n"] == 4
    assert res["data"]["clean_val_images"] == 200
    assert res["command"].startswith("siba defend strip ") and res["machine"]["cores"] >= 1
    summary = json.loads((run / "defenses" / "summary.json").read_text())
    assert [(r["victim"], r["defense"]) for r in summary] == [("badnets-r0.1", "strip")]
    assert summary[0]["auroc"] == res["metrics"]["auroc"]
    assert "| badnets-r0.1 | strip |" in (run / "defenses" / "summary.md").read_text()
    capsys.readouterr()
    before = (run / "defenses" / "strip" / "badnets-r0.1" / "result.json").stat().st_mtime_ns
    assert main(["defend", "strip", str(run), "--set", "n=4", "--val-size", "200", "--quiet"]) == 0
    assert "done already" in capsys.readouterr().err  # the same command again resumes: nothing redone
    assert (run / "defenses" / "strip" / "badnets-r0.1" / "result.json").stat().st_mtime_ns == before


def test_defend_a_named_model(run_dir, tmp_path):
    victim = run_dir / "victims" / "badnets-r0.1"
    out = tmp_path / "d"
    assert main(["defend", "scale-up", "--model", str(victim / "model.safetensors"), "--data", "cifar10-mini",
                 "--trigger", str(run_dir / "triggers" / "badnets" / "trigger.safetensors"), "--val-size", "100",
                 "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "scale-up" / "badnets-r0.1" / "result.json").read_text())
    assert res["defense"] == "scale-up" and "auroc" in res["metrics"]


@pytest.mark.parametrize("argv, needle", [
    (["defend", "nope", "RUN"], "unknown defense 'nope'"),
    (["defend", "strip", "RUN", "--victim", "siba@0.1"], "no finished victim siba@0.1"),
    (["defend", "strip", "RUN", "--victim", "badnets"], "expected ATTACK@RATE"),
    (["defend", "all", "RUN", "--set", "n=3"], "--set applies to one defense"),
    (["defend", "strip", "RUN", "--set", "n=0"], "n (the number of superimposed images)"),
    (["defend", "strip"], "name a run folder, or --model and --data"),
    (["defend", "strip", "/nonexistent/run"], "is not a siba run folder"),
])
def test_defend_mistakes_are_one_line_errors(run_dir, tmp_path, capsys, argv, needle):
    argv = [str(run_dir) if a == "RUN" else a for a in argv]
    listing = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == listing  # nothing written


def test_the_summary_keeps_each_kinds_headline_numbers(tmp_path):
    from siba.report.defenses import write_summary
    from siba.runtime import write_json

    nc = {"defense": "neural-cleanse", "kind": "inspection", "wall_s": 187.0,
          "metrics": {"flagged": [0], "target": 0, "target_flagged": True,
                      "scores": {"l1_norms": [7.1, 37.7, 25.0], "anomaly_indices": [2.81, 0.04, 1.19],
                                 "max_anomaly_index_below_median": 2.81}}}
    cam = {"defense": "grad-cam", "kind": "inspection", "wall_s": 1.7,
           "metrics": {"flagged": None, "scores": {"mass_share_poisoned": 0.025, "mass_share_clean": 0.002,
                                                   "share_ratio": 11.1}}}
    abl = {"defense": "abl", "kind": "training", "wall_s": 900.0,
           "metrics": {"ba_before": 0.85, "asr_before": 0.97, "ba_after": 0.8, "asr_after": 0.05,
                       "isolation_precision": 0.9, "isolation_recall": 0.2}}
    write_json(tmp_path / "neural-cleanse" / "badnets-r0.01" / "result.json", nc)
    write_json(tmp_path / "grad-cam" / "badnets-r0.01" / "result.json", cam)
    write_json(tmp_path / "abl" / "siba-r0.01" / "result.json", abl)
    rows = {r["defense"]: r for r in write_summary(tmp_path)}
    assert rows["neural-cleanse"]["anomaly_index"] == 2.81 and rows["neural-cleanse"]["target_anomaly_index"] == 2.81
    assert rows["neural-cleanse"]["flagged"] == [0] and rows["neural-cleanse"]["target_flagged"] is True
    assert rows["grad-cam"]["trigger_share"] == 0.025 and rows["grad-cam"]["clean_share"] == 0.002
    assert rows["abl"]["asr_after"] == 0.05 and rows["abl"]["victim"] == "siba-r0.01"
    assert rows["abl"]["asr_before"] == 0.97  # the victim trained without ABL, beside the one trained with it
    md = (tmp_path / "summary.md").read_text()
    assert "| badnets-r0.01 | neural-cleanse |" in md and "anomaly_index" in md and "2.810" in md
