"""The ``siba`` command in-process: listing, help, one-line errors that write nothing, train + evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siba.cli.main import main

TINY = ["--epochs", "1", "--batch-size", "4", "--model", "fastnet", "--model-arg", "widths=[8,8,8,8]",
        "--precision", "fp32", "--device", "cpu", "--quiet"]


def make_data(root: Path, classes=("ant", "bee", "cow"), train: int = 4, test: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for ci, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 120, (8, 8, 3), dtype=np.uint8)
                arr[..., ci % 3] += 120  # a learnable colour cue
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("cli") / "tiny")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """One real tiny `siba train` run shared by the tests that need a model."""
    out = tmp_path_factory.mktemp("cli-run") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("SIBA_CACHE", str(tmp_path_factory.getbasetemp() / "siba-cache"))
    try:
        rc = main(["train", "--data", str(data_dir), "--out", str(out), *TINY])
    finally:
        mp.undo()
    assert rc == 0
    return out


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def expect_user_error(capsys, argv, *needles) -> str:
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("siba: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in cap.err
    return lines[0]


def expect_usage_error(capsys, argv, *needles, prog: str | None = None) -> str:
    """An argparse rejection: exit 2 and exactly one line on stderr, ``<prog>: error: ...``, no usage text."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.splitlines()
    assert len(lines) == 1, cap.err
    line = lines[0]
    prog = prog or f"siba {argv[0]}"
    assert line.startswith(f"{prog}: error: "), line
    assert line.endswith(f"(see {prog} --help)"), line
    assert "usage:" not in cap.err and "Traceback" not in cap.err
    for needle in needles:
        assert needle in line
    return line


# --------------------------------------------------------------------------- info


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "models:" in out and "attacks:" in out and "data sets:" in out
    for name in ("fastnet", "resnet18", "resnet34", "vgg16", "vgg19", "siba", "badnets", "cifar10-mini"):
        assert name in out


def test_train_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--epochs" in out and "--resume" in out and "--out" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


# --------------------------------------------------------------------------- user errors


def test_unknown_model(tmp_path, capsys, data_dir):
    out = tmp_path / "out"
    expect_user_error(capsys, ["train", "--data", str(data_dir), "--out", str(out), *TINY[:4],
                               "--model", "nope", "--quiet"], "nope")
    assert not out.exists()


def test_bad_model_option(tmp_path, capsys, data_dir):
    out = tmp_path / "out"
    expect_user_error(capsys, ["train", "--data", str(data_dir), "--out", str(out), "--epochs", "1",
                               "--model-arg", "depth=3", "--quiet"], "bad options")
    assert not out.exists()


def test_bad_model_option_value_is_a_one_line_error(tmp_path, capsys, data_dir):
    out = tmp_path / "out"
    expect_user_error(capsys, ["train", "--data", str(data_dir), "--out", str(out), "--epochs", "1",
                               "--model", "fastnet", "--model-arg", "widths=[8,8]", "--quiet"], "bad options")
    assert not out.exists()


def test_model_option_accepts_a_comma_list():
    from siba.cli.main import _kv

    assert _kv("widths=8,16,16,32") == ("widths", [8, 16, 16, 32])
    assert _kv("widths=[8, 16]") == ("widths", [8, 16])
    assert _kv("width=16") == ("width", 16)
    assert _kv("stem=imagenet") == ("stem", "imagenet")


def test_unknown_data_set_name(tmp_path, capsys):
    out = tmp_path / "out"
    expect_user_error(capsys, ["train", "--data", "no-such-set-xyz", "--out", str(out), *TINY], "no-such-set-xyz")
    assert not out.exists()


def test_data_path_that_does_not_exist(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "missing" / "data"
    expect_user_error(capsys, ["train", "--data", str(missing), "--out", str(out), *TINY], str(missing))
    assert not out.exists()


def test_data_folder_without_splits(tmp_path, capsys):
    root = tmp_path / "flat"
    (root / "cls").mkdir(parents=True)
    out = tmp_path / "out"
    expect_user_error(capsys, ["train", "--data", str(root), "--out", str(out), *TINY], "train/ and test/")
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--epochs", "-1"), ("--batch-size", "0"), ("--epochs", "many"),
                                        ("--schedule", "cosine")])
def test_bad_numbers_are_usage_errors(tmp_path, capsys, data_dir, flag, value):
    out = tmp_path / "out"
    expect_usage_error(capsys, ["train", "--data", str(data_dir), "--out", str(out), flag, value],
                       f"error: argument {flag}")
    assert not out.exists()


def test_missing_required_out_is_a_usage_error(capsys):
    expect_usage_error(capsys, ["train"], "required", "--out")


@pytest.mark.parametrize("argv, needles", [
    (["optimize", "--out", "x", "--k", "0"], ["argument --k: must be ≥ 1 (got 0)"]),
    (["optimize", "--out", "x", "--target", "-1"], ["argument --target: must be ≥ 0 (got -1)"]),
    (["optimize", "--out", "x", "--passes", "0"], ["argument --passes: must be ≥ 1 (got 0)"]),
    (["optimize", "--out", "x", "--k", "many"], ["argument --k: expected a whole number, got 'many'"]),
    (["optimize", "--out", "x", "--eps", "big"], ["argument --eps: expected a number", "'big'"]),
    (["optimize", "--out", "x", "--mask-rule", "best"], ["argument --mask-rule: invalid choice: 'best'"]),
    (["optimize", "--out", "x", "--bogus"], ["unrecognized arguments: --bogus"]),
    (["optimize", "--out"], ["argument --out: expected one argument"]),
    (["optimize"], ["the following arguments are required: --out"]),
    (["poison", "--trigger", "t", "--out", "x", "--rate", "abc"], ["argument --rate: expected a number", "'abc'"]),
    (["poison", "--out", "x"], ["required: --trigger"]),
    (["poison", "--trigger", "t", "--out", "x", "--seed", "s"], ["argument --seed: invalid int value: 's'"]),
    (["evaluate"], ["required: --model"]),
    (["evaluate", "--model", "m", "extra"], ["unrecognized arguments: extra"]),
    (["run"], ["required: config"]),
    (["run", "a.yaml", "b.yaml"], ["unrecognized arguments: b.yaml"]),
    (["train", "--out", "x", "--model-arg", "width"], ["argument --model-arg: expected KEY=VALUE, got 'width'"]),
    (["train", "--out", "x", "--e", "1"], ["ambiguous option: --e"]),
    (["list", "--long"], ["unrecognized arguments: --long"]),
])
def test_every_usage_error_is_one_line(tmp_path, capsys, monkeypatch, argv, needles):
    monkeypatch.chdir(tmp_path)
    expect_usage_error(capsys, argv, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("argv, needles", [
    (["frobnicate"], ["argument COMMAND: invalid choice: 'frobnicate'"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_top_level_usage_errors_are_one_line(capsys, argv, needles):
    expect_usage_error(capsys, argv, *needles, prog="siba")


def test_help_promises_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ends with one line on stderr and exit status 2" in out


def test_evaluate_missing_model(tmp_path, capsys):
    missing = tmp_path / "missing.safetensors"
    expect_user_error(capsys, ["evaluate", "--model", str(missing), "--quiet"], str(missing))


def test_evaluate_model_for_other_classes(tmp_path, capsys, trained):
    other = make_data(tmp_path / "two", classes=("x", "y"), train=1, test=1)
    expect_user_error(capsys, ["evaluate", "--model", str(trained / "model.safetensors"), "--data", str(other)],
                      "3 classes", "has 2")


def test_resume_with_another_architecture(tmp_path, capsys, data_dir, trained):
    before = snapshot(trained)
    expect_user_error(capsys, ["train", "--data", str(data_dir), "--out", str(trained), "--resume",
                               "--epochs", "2", "--batch-size", "4", "--model", "resnet18", "--model-arg", "width=4",
                               "--device", "cpu", "--quiet"], "another model")
    assert snapshot(trained) == before


def test_unknown_device(tmp_path, capsys, data_dir):
    out = tmp_path / "out"
    expect_user_error(capsys, ["train", "--data", str(data_dir), "--out", str(out), *TINY, "--device", "tpu"],
                      "tpu")
    assert not out.exists()



def test_train_init_that_does_not_fit_is_one_line(tmp_path, capsys, data_dir):
    wide = tmp_path / "wide.pth"
    from siba.models import create_model

    torch.save(create_model("fastnet", 3, widths=[16, 16, 16, 16]).state_dict(), wide)
    for init, needle in ((wide, "does not fit this fastnet"), (tmp_path / "none.pth", "weights file not found")):
        out = tmp_path / "out"
        expect_user_error(capsys, ["train", "--data", str(data_dir), "--out", str(out), *TINY, "--init", str(init)],
                          needle)
        assert not out.exists()


# --------------------------------------------------------------------------- real runs


def test_train_writes_model_and_summary(capsys, trained, data_dir):
    capsys.readouterr()
    assert (trained / "model.safetensors").is_file()
    assert (trained / "metrics.csv").is_file() and (trained / "checkpoint.safetensors").is_file()
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["data"] == str(data_dir)
    assert summary["command"].startswith("siba train --data")
    assert summary["model"] == {"arch": "fastnet", "num_classes": 3, "kwargs": {"widths": [8, 8, 8, 8]}}
    assert summary["epochs"] == 1 and summary["train_images"] == 12
    assert summary["config"]["batch_size"] == 4 and summary["config"]["precision"] == "fp32"
    # the accuracies are those of the saved model on the data (the same fp32 arithmetic: equal to the bit)
    from siba.data import load_dataset
    from siba.models import load_model
    from siba.training import accuracy

    data = load_dataset(data_dir)
    model = load_model(trained / "model.safetensors").to(memory_format=torch.channels_last)
    assert summary["test_acc"] == accuracy(model, data.test, precision="fp32")
    assert summary["train_acc_clean"] == accuracy(model, data.train, precision="fp32")
    metrics = (trained / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 2 and float(metrics[1].split(",")[metrics[0].split(",").index("test_acc")]) == \
        pytest.approx(summary["test_acc"], abs=1e-6)


def test_train_learns_a_cue_the_data_holds(tmp_path, capsys, data_dir):
    """Each class of the tiny set has its own bright colour channel: 30 epochs fit it and generalise."""
    out = tmp_path / "run"
    args = [a if a != "1" else "30" for a in TINY]  # --epochs 30
    assert main(["train", "--data", str(data_dir), "--out", str(out), *args, "--crop-pad", "0", "--no-flip",
                 "--schedule", "onecycle", "--eval-every", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 30
    assert summary["train_acc_clean"] == 1.0  # chance is 1/3; measured 1.0 for seeds 0-4
    assert summary["test_acc"] >= 5 / 6  # 6 test images; measured 6/6 for seeds 0-4


def test_train_init_starts_from_the_file(tmp_path, capsys, trained, data_dir):
    """--init with the weights of a trained run: at a learning rate of 1e-9 the new run's weights stay
    the ones it started from (those of the trained run, not a fresh initialisation)."""
    start = tmp_path / "start.pth"
    from siba.models import load_model

    torch.save(load_model(trained / "model.safetensors").state_dict(), start)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--out", str(out), *TINY, "--init", str(start),
                 "--lr", "1e-9", "--schedule", "constant", "--momentum", "0", "--weight-decay", "0"]) == 0
    a = load_model(trained / "model.safetensors").state_dict()
    b = load_model(out / "model.safetensors").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a if "running" not in k
               and "num_batches" not in k)


def test_train_prints_json(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--out", str(out), "--image-size", "16", *TINY]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(printed) == {"test_acc", "train_acc_clean", "wall_s"}
    from siba.models import read_model_metadata

    meta = read_model_metadata(out / "model.safetensors")
    assert meta["image_shape"] == [3, 16, 16]  # the image folders were resized
    assert meta["classes"] == ["ant", "bee", "cow"]


def test_evaluate_prints_json_with_ba(tmp_path, capsys, trained, data_dir):
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(trained / "model.safetensors"), "--data", str(data_dir),
                 "--device", "cpu", "--out", str(report)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_test"] == 6
    # BA is the saved model's accuracy on the test set, at the precision evaluate uses (auto: bf16 on CPUs
    # with AMX, which is why it can differ from the fp32 test accuracy that training recorded)
    from siba.data import load_dataset
    from siba.models import load_model
    from siba.training import predict

    test = load_dataset(data_dir).test
    model = load_model(trained / "model.safetensors")
    correct = int((predict(model, test.images, precision="auto").cpu() == test.labels).sum())
    assert result["ba"] == correct / 6
    assert json.loads(report.read_text())["ba"] == result["ba"]


def test_resume_continues_the_same_run(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    constant = ["--schedule", "constant"]  # only a constant learning rate lets a finished run be extended
    assert main(["train", "--data", str(data_dir), "--out", str(out), *TINY, *constant]) == 0
    args = [a if a != "1" else "2" for a in TINY]  # --epochs 2
    assert main(["train", "--data", str(data_dir), "--out", str(out), "--resume", *args, *constant]) == 0
    assert "resuming from epoch 1 of 2" in capsys.readouterr().err
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 2
