"""`siba optimize`, `siba poison`, `siba evaluate --trigger`: the attack commands and their bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from siba.attacks import load_trigger
from siba.cli.main import build_parser, main
from siba.data import load_dataset
from siba.poisoning import load_exported, read_manifest

from .test_cli import TINY, expect_usage_error, expect_user_error, make_data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny 3-class image-folder data set (8×8), a surrogate for it, and one of another class count."""
    root = tmp_path_factory.mktemp("attack-cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIBA_CACHE", str(root / "cache"))
    try:
        data = make_data(root / "data", train=10, test=4)
        other = make_data(root / "other", classes=("a", "b", "c", "d"), train=2, test=1)
        assert main(["train", "--data", str(data), "--out", str(root / "sur"), *TINY]) == 0
        assert main(["train", "--data", str(other), "--out", str(root / "sur4"), *TINY]) == 0
        assert main(["optimize", "--data", str(data), "--attack", "siba", "--surrogate",
                     str(root / "sur" / "model.safetensors"), "--k", "5", "--eps", "8/255", "--passes", "2",
                     "--batch-size", "8", "--out", str(root / "trig"), "--device", "cpu", "--quiet"]) == 0
    finally:
        mp.undo()
    return {"root": root, "data": data, "other": other, "sur": root / "sur" / "model.safetensors",
            "sur4": root / "sur4" / "model.safetensors", "trigger": root / "trig" / "trigger.safetensors"}


def opt(setup, out, *extra):
    return ["optimize", "--data", str(setup["data"]), "--surrogate", str(setup["sur"]), "--out", str(out),
            "--device", "cpu", "--quiet", "--passes", "1", "--batch-size", "8", "--k", "5", *extra]


def test_optimize_writes_a_trigger_within_budget(setup, capsys):
    trig = load_trigger(setup["trigger"])
    assert trig.k == 5 and abs(trig.eps - 8 / 255) < 1e-12
    assert int(trig.mask.sum()) == 5 and float(trig.delta.abs().max()) <= 8 / 255
    desc = json.loads(setup["trigger"].with_suffix(".json").read_text())
    assert desc["attack"] == "siba" and desc["target"] == 0 and desc["params"]["passes"] == 2
    assert "command" in desc and desc["command"].startswith("siba optimize")
    assert (setup["root"] / "trig" / "trigger.png").stat().st_size > 100


@pytest.mark.parametrize("extra, needle", [
    (["--k", "65"], "more than the 8×8=64 pixels"),
    (["--eps", "1.5"], "eps must be in (0, 1]"),
    (["--eps", "0"], "eps must be in (0, 1]"),
    (["--target", "3"], "target class 3 is not among the 3 classes"),
    (["--attack", "nope"], "unknown attack 'nope'"),
    (["--set", "bogus=1"], "unknown option(s) bogus"),
])
def test_optimize_bad_input(setup, tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    expect_user_error(capsys, opt(setup, out, *extra), needle)
    assert not out.exists()


def test_optimize_k_zero_is_a_usage_error(setup, tmp_path, capsys):
    line = expect_usage_error(capsys, opt(setup, tmp_path / "out", "--k", "0"), "--k")
    assert line == "siba optimize: error: argument --k: must be ≥ 1 (got 0) (see siba optimize --help)"
    assert not (tmp_path / "out").exists()


def test_tuap_records_the_k_it_used(setup, tmp_path, capsys):
    """TUAP has no L0 budget: its trigger's params say k = H×W, like the trigger's own k, not the default 100."""
    out = tmp_path / "tuap"
    argv = opt(setup, out, "--attack", "tuap")
    argv.remove("--k")
    argv.remove("5")
    assert main(argv) == 0
    desc = json.loads((out / "trigger.json").read_text())
    assert desc["attack"] == "tuap"
    assert desc["k"] == 8 * 8 == desc["params"]["k"]
    trig = load_trigger(out / "trigger.safetensors")
    assert desc["l0"] == 64 == int(trig.mask.sum())  # no L0 budget: the mask is every pixel of the 8×8 image
    assert trig.mask.eq(1).all()
    assert trig.meta["params"]["k"] == 64


def test_poison_help_describes_both_target_rules_and_no_test(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["poison", "--help"])
    assert exc.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "--no-test do not write the clean test/ tree (the folder is then not a data set for `siba train`)" in shown
    poison = build_parser().commands["poison"]
    text = poison.description  # the help wraps it at hyphens
    assert "(not of the target class)" not in text
    assert "all-to-one triggers pick images not of the target class" in text
    assert "all-to-all triggers pick images of every class and relabel class y to (y+1) mod K" in text
    assert "with --no-test it holds no test/ tree" in text


def test_optimize_surrogate_of_another_class_count(setup, tmp_path, capsys):
    argv = opt(setup, tmp_path / "out")
    argv[argv.index("--surrogate") + 1] = str(setup["sur4"])
    expect_user_error(capsys, argv, "model for 4 classes", "data has 3")
    assert not (tmp_path / "out").exists()


def test_optimize_needs_a_surrogate(setup, tmp_path, capsys):
    argv = ["optimize", "--data", str(setup["data"]), "--out", str(tmp_path / "out"), "--k", "5", "--quiet"]
    expect_user_error(capsys, argv, "needs --surrogate")
    assert not (tmp_path / "out").exists()


def test_badnets_needs_no_surrogate(setup, tmp_path, capsys):
    assert main(["optimize", "--data", str(setup["data"]), "--attack", "badnets", "--set", "size=2",
                 "--out", str(tmp_path / "bn"), "--quiet"]) == 0
    trig = load_trigger(tmp_path / "bn" / "trigger.safetensors")
    assert trig.kind == "blend" and float(trig.alpha.sum()) == 2 * 2 * 3


def test_poison_exports_a_trainable_set(setup, tmp_path, capsys):
    out = tmp_path / "poisoned"
    assert main(["poison", "--data", str(setup["data"]), "--trigger", str(setup["trigger"]), "--rate", "0.2",
                 "--seed", "1", "--out", str(out), "--quiet"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["num_images"] == 30 and info["num_poisoned"] == 6
    manifest = read_manifest(out)
    assert len(manifest["poisoned_indices"]) == 6 and manifest["rate"] == 0.2
    splits = load_dataset(out)
    assert len(splits.train) == 30 and len(splits.test) == 12
    back = load_exported(out)
    clean = load_dataset(setup["data"]).train
    trig = load_trigger(setup["trigger"])
    idx = torch.tensor(manifest["poisoned_indices"])
    assert torch.equal(back.images[idx], trig.apply_uint8(clean.images[idx]))
    assert (back.labels[idx] == 0).all()
    # `siba train` reads the exported folder like any data set
    assert main(["train", "--data", str(out), "--out", str(tmp_path / "victim"), *TINY]) == 0
    capsys.readouterr()
    # ... and `siba evaluate --trigger` reports ASR and stealth on the clean test set
    assert main(["evaluate", "--model", str(tmp_path / "victim" / "model.safetensors"), "--data", str(setup["data"]),
                 "--trigger", str(setup["trigger"]), "--out", str(tmp_path / "eval.json"), "--quiet"]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert {"ba", "asr", "asr_quantized", "l0", "linf", "ssim", "psnr"} <= set(ev)
    # the stealth numbers, recomputed from the trigger's tensors: clip(x + m⊙δ, 0, 1) against x, a pixel
    # counted when any channel moves by more than half a grey level; only the 5 masked pixels can move
    test = load_dataset(setup["data"]).test.images.double() / 255
    poisoned = (test + trig.mask.double() * trig.delta.double()).clamp(0, 1)
    change = (poisoned - test).abs()
    l0 = (change > 0.5 / 255).any(1).flatten(1).sum(1)
    assert ev["l0_max"] == int(l0.max()) and ev["l0"] == pytest.approx(float(l0.double().mean()), abs=1e-9)
    assert not ((change > 0).any(1) & (trig.mask == 0)).any()
    assert ev["linf"] == pytest.approx(float(change.max()), abs=1e-7)
    assert 0 < ev["linf"] <= 8 / 255 + 6e-8
    assert len(ev["asr_by_class"]) == 3 and ev["asr_by_class"][0] is None  # target class 0 is not attacked


@pytest.mark.parametrize("rate, needle", [("0", "in (0, 1)"), ("1", "in (0, 1)"), ("1.5", "in (0, 1)"),
                                          ("0.01", "poisons no sample")])
def test_poison_bad_rates_write_nothing(setup, tmp_path, capsys, rate, needle):
    out = tmp_path / "poisoned"
    expect_user_error(capsys, ["poison", "--data", str(setup["data"]), "--trigger", str(setup["trigger"]),
                               "--rate", rate, "--out", str(out), "--quiet"], needle)
    assert not out.exists() and not any(Path(tmp_path).iterdir())


def test_trigger_of_another_size_or_class_count(setup, tmp_path, capsys):
    big = make_data(tmp_path / "big", train=2, test=1)
    expect_user_error(capsys, ["poison", "--data", str(big), "--image-size", "16", "--trigger",
                               str(setup["trigger"]), "--rate", "0.5", "--out", str(tmp_path / "p"), "--quiet"],
                      "8×8")
    expect_user_error(capsys, ["poison", "--data", str(setup["other"]), "--trigger", str(setup["trigger"]),
                               "--rate", "0.5", "--out", str(tmp_path / "p"), "--quiet"], "3 classes")
    expect_user_error(capsys, ["evaluate", "--model", str(setup["sur"]), "--data", str(big), "--image-size", "16",
                               "--trigger", str(setup["trigger"]), "--quiet"], "8×8")
    assert not (tmp_path / "p").exists()


def test_poison_missing_trigger(setup, tmp_path, capsys):
    expect_user_error(capsys, ["poison", "--data", str(setup["data"]), "--trigger", str(tmp_path / "none"),
                               "--out", str(tmp_path / "p")], "trigger file not found")
    assert not (tmp_path / "p").exists()
