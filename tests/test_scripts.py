"""The analysis scripts under scripts/ that results/ quote."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trigger_placement_figures_on_known_masks():
    tp = _load("trigger_placement")
    contrast = torch.zeros(32, 32)
    contrast[8:24, 8:24] = 1.0  # the "object" in the middle varies, the background does not
    corners = torch.zeros(32, 32)
    corners[0, 0] = corners[0, 1] = corners[31, 31] = 1
    r = tp.placement(corners, contrast)
    assert r == {"pixels": 3, "in_border": 1.0, "dist_from_centre": r["dist_from_centre"],
                 "local_contrast": 0.0, "adjacent_pairs": 1}
    assert 21.0 < r["dist_from_centre"] < 22.0  # corners are ~21.9 px from the centre (15.5, 15.5)
    centre = torch.zeros(32, 32)
    centre[14:18, 14:18] = 1
    r = tp.placement(centre, contrast)
    assert r["in_border"] == 0.0 and r["local_contrast"] == 1.0 and r["adjacent_pairs"] == 24
    uniform = tp.placement(torch.ones(32, 32), contrast)
    assert uniform["in_border"] == 1 - 24 * 24 / 1024  # 43.75%: what a random mask has on average


def test_local_contrast_is_zero_on_flat_images_and_high_on_a_checkerboard():
    tp = _load("trigger_placement")
    flat = torch.full((2, 3, 8, 8), 0.5)
    assert torch.all(tp.local_contrast(flat) == 0)
    board = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float().expand(2, 3, 8, 8)
    inner = tp.local_contrast(board)[1:-1, 1:-1]
    assert torch.allclose(inner, torch.full_like(inner, 4 / 9), atol=1e-6)  # a 1 among four 0s and four 1s: 1 - 5/9


def test_per_image_contrast_maps_average_to_the_overall_map():
    tp = _load("trigger_placement")
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = tp.local_contrast(images, per_image=True)
    assert maps.shape == (5, 8, 8)
    assert torch.allclose(maps.mean(0), tp.local_contrast(images))


def test_asr_by_contrast_groups_images_by_their_contrast():
    tp = _load("trigger_placement")
    contrast = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4])
    success = contrast < 0.45  # the trigger works only where the image is smooth
    rows = tp.asr_by_contrast(success, contrast, bins=4)
    assert [r["images"] for r in rows] == [2, 2, 2, 2]
    edges = [x for r in rows for x in (r["contrast_from"], r["contrast_to"])]
    assert edges == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9])
    assert [r["asr"] for r in rows] == [1.0, 1.0, 0.0, 0.0]


def test_export_results_picks_the_lowest_rate_where_siba_reaches_90_and_fills_the_clean_ba(tmp_path, monkeypatch):
    import json
    import sys

    from siba.experiments.pipeline import victim_dir

    ex = _load("export_results")
    run, out = tmp_path / "run", tmp_path / "results"
    rows = [{"attack": a, "rate": r, "ba": 0.87, "asr": asr, "clean_ba": None, "train_acc": 0.99, "command": "c",
             "crop_pad": 4, "flip": True, "epochs": 48, "train_size": 20000}
            for a, r, asr in [("siba", 0.01, 0.5), ("siba", 0.02, 0.93), ("siba", 0.05, 0.97),
                              ("badnets", 0.02, 1.0), ("random", 0.05, 0.04)]]
    for r in rows:
        folder = victim_dir(run, r["attack"], r["rate"])
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text("epoch,train_acc,asr,wall_s,test_acc\n1,0.5,0.2,10,\n2,0.9,0.6,20,0.8\n")
    (run / "results.json").write_text(json.dumps({"data": "d", "results": rows, "command": "siba run x"}))
    monkeypatch.setattr(sys, "argv", ["export_results.py", str(run), str(out), "--clean-ba", "0.884", "--machine", "m"])
    ex.main()
    assert sorted(p.name for p in out.glob("*.json")) == ["badnets.json", "rate_sweep.json", "siba.json"]
    siba = json.loads((out / "siba.json").read_text())
    assert siba["rate"] == 0.02 and siba["asr"] == 0.93 and siba["clean_ba"] == 0.884 and siba["machine"] == "m"
    assert (siba["crop_pad"], siba["flip"], siba["epochs"], siba["train_size"]) == (4, True, 48, 20000)  # the recipe
    assert [c["asr"] for c in siba["curve"]] == [0.2, 0.6] and siba["curve"][1]["test_acc"] == 0.8
    sweep = json.loads((out / "rate_sweep.json").read_text())
    assert sweep["chosen_rate"] == 0.02 and len(sweep["rows"]) == 5
    monkeypatch.setattr(sys, "argv", ["export_results.py", str(run), str(out), "--clean-ba", "1.5"])
    with pytest.raises(SystemExit):
        ex.main()


def test_export_results_merge_keeps_the_rows_a_later_run_folder_lacks(tmp_path, monkeypatch, capsys):
    import json
    import sys

    from siba.experiments.pipeline import victim_dir

    ex = _load("export_results")
    out = tmp_path / "results"

    def run_with(name, cells):
        run = tmp_path / name
        rows = [{"attack": a, "rate": r, "ba": 0.87, "asr": asr, "train_acc": 0.99, "command": f"{name} {a}@{r}"}
                for a, r, asr in cells]
        for r in rows:
            folder = victim_dir(run, r["attack"], r["rate"])
            folder.mkdir(parents=True)
            (folder / "metrics.csv").write_text("epoch,train_acc,asr,wall_s\n1,0.9,0.5,10\n")
        clean = {"test_acc": 0.88 if name == "first" else 0.5}
        (run / "results.json").write_text(json.dumps({"data": "d", "surrogate": {"path": "s"}, "clean": clean,
                                                      "results": rows}))
        (run / "report.md").write_text(f"# {name}\n")
        return run

    first = run_with("first", [("siba", 0.01, 0.5), ("siba", 0.05, 0.87), ("sparse", 0.05, 0.99)])
    monkeypatch.setattr(sys, "argv", ["export_results.py", str(first), str(out), "--machine", "m1"])
    ex.main()
    assert json.loads((out / "siba.json").read_text())["rate"] == 0.05  # 90% at no rate: the highest
    # a later session's run folder with only the new cells, and a corrected SIBA at 1%
    later = run_with("later", [("siba", 0.01, 0.95), ("random", 0.05, 0.02)])
    monkeypatch.setattr(sys, "argv", ["export_results.py", str(later), str(out), "--merge", "--machine", "m2"])
    ex.main()
    sweep = json.loads((out / "rate_sweep.json").read_text())
    assert [(r["attack"], r["rate"], r["asr"]) for r in sweep["rows"]] == [
        ("siba", 0.01, 0.95), ("random", 0.05, 0.02), ("siba", 0.05, 0.87), ("sparse", 0.05, 0.99)]
    assert sweep["chosen_rate"] == 0.01 and sweep["surrogate"] == {"path": "s"}
    assert sweep["clean"] == {"test_acc": 0.88}  # the folder's own run-level record, not the later run's
    siba = json.loads((out / "siba.json").read_text())
    assert siba["rate"] == 0.01 and siba["asr"] == 0.95 and siba["machine"] == "m2"
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert note == [f"note: sparse.json in {out} are at another rate than 0.01"]  # left at 5%: said so
    assert [r.get("machine") for r in sweep["rows"]] == ["m2", "m2", "m1", "m1"]  # each row says where it ran
    assert (out / "report.md").read_text() == "# first\n"  # the merged folder keeps its report
    # without --merge the folder is the run's alone
    monkeypatch.setattr(sys, "argv", ["export_results.py", str(later), str(out)])
    ex.main()
    assert len(json.loads((out / "rate_sweep.json").read_text())["rows"]) == 2
    assert (out / "report.md").read_text() == "# later\n"


def test_plot_rate_sweeps_draws_one_line_per_attack_and_sweep(tmp_path, capsys):
    import json

    ps = _load("plot_rate_sweeps")
    small = {"rows": [{"attack": "siba", "rate": 0.05, "asr": 0.887}, {"attack": "siba", "rate": 0.01, "asr": 0.215},
                      {"attack": "random", "rate": 0.01, "asr": 0.0125}]}
    strong = {"rows": [{"attack": "siba", "rate": 0.02, "asr": 0.993}]}
    series = ps.series_of([(small, "(small)"), (strong, "(strong)")])
    assert series == {"siba (small)": [(1.0, 21.5), (5.0, 88.7)], "random (small)": [(1.0, 1.25)],
                      "siba (strong)": [(2.0, 99.3)]}
    assert list(ps.series_of([(small, "")], ["random"])) == ["random"]
    (tmp_path / "a.json").write_text(json.dumps(small))
    out = tmp_path / "chart.png"
    assert ps.main([str(out), f"{tmp_path / 'a.json'}=(small)"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ps.main([str(tmp_path / "b.png"), str(tmp_path / "missing.json")]) == 2
    assert "cannot read the sweep" in capsys.readouterr().err and not (tmp_path / "b.png").exists()


def test_export_defenses_merges_into_an_earlier_export_and_lists_every_command(tmp_path, capsys):
    import json

    ed = _load("export_defenses")

    def result(folder, defense, victim, command, **metrics):
        d = folder / defense / victim
        d.mkdir(parents=True)
        kind = {"abl": "training", "strip": "detection"}[defense]
        (d / "result.json").write_text(json.dumps({
            "defense": defense, "kind": kind, "wall_s": 12.0, "command": command, "metrics": metrics,
            "machine": {"cores": 2, "cpu": "test cpu", "torch": "2.13.0"}}))
        (d / "figure.png").write_bytes(b"png")
        (d / "model.safetensors").write_bytes(b"weights")  # large files stay in the run folder

    out, src = tmp_path / "results", tmp_path / "run" / "defenses"
    result(out, "strip", "badnets-r0.01", "siba defend strip RUN", auroc=0.9)  # an earlier export
    result(src, "abl", "siba-r0.01", "siba defend abl RUN --victim siba@0.01", ba_after=0.8, asr_after=0.1)
    assert ed.main([str(src), str(out), "--title", "T"]) == 0
    assert "2 results" in capsys.readouterr().out
    assert (out / "abl/siba-r0.01/figure.png").read_bytes() == b"png"
    assert not (out / "abl/siba-r0.01/model.safetensors").exists()
    rows = {(r["defense"], r["victim"]): r for r in json.loads((out / "summary.json").read_text())}
    assert rows[("abl", "siba-r0.01")]["asr_after"] == 0.1 and rows[("strip", "badnets-r0.01")]["auroc"] == 0.9
    readme = (out / "README.md").read_text()
    assert "`siba defend strip RUN` → `strip/badnets-r0.01/`" in readme
    assert "`siba defend abl RUN --victim siba@0.01` → `abl/siba-r0.01/`: 12 s (2-core test cpu" in readme
    assert ed.main([str(tmp_path / "nothing"), str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_asr_vs_shift_measures_a_victim_at_every_offset(tmp_path, monkeypatch, capsys):
    import json

    from siba.cli.main import main as siba_main

    monkeypatch.setenv("SIBA_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert siba_main(["run", str(ROOT / "configs" / "smoke.yaml"), "--out", str(run), "--quiet", "--device", "cpu",
                      "--only", "badnets"]) == 0
    sh = _load("asr_vs_shift")
    out = tmp_path / "shift_r0.05"  # a dot in OUT is part of the name: OUT.json, not shift_r0.json
    assert sh.main([str(run), "--victim", "badnets-r0.05", "--max-shift", "1", "--out", str(out),
                    "--device", "cpu"]) == 0
    assert sorted(p.name for p in tmp_path.glob("shift*")) == ["shift_r0.05.json", "shift_r0.05.png"]
    res = json.loads((tmp_path / "shift_r0.05.json").read_text())
    grid = res["victims"]["badnets-r0.05"]
    assert res["test_images"] == 1000 and grid["offsets"] == [-1, 0, 1]
    assert len(grid["asr"]) == 3 and all(len(row) == 3 and all(0 <= v <= 1 for v in row) for row in grid["asr"])
    assert grid["asr_dx"] == grid["asr"][1] and grid["asr_dy"] == [row[1] for row in grid["asr"]]
    # at offset 0 the image is seen as the pipeline's evaluation saw it
    ev = json.loads((run / "victims" / "badnets-r0.05" / "eval.json").read_text())
    assert grid["asr"][1][1] == pytest.approx(ev["asr"], abs=0.01)
    assert (tmp_path / "shift_r0.05.png").stat().st_size > 0
    assert res["command"].startswith("python scripts/asr_vs_shift.py")
    capsys.readouterr()
    assert sh.main([str(run), "--victim", "siba-r0.05", "--out", str(tmp_path / "x")]) == 2
    assert sh.main([str(run), "--victim", "badnets-r0.05", "--test-fraction", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"asr_vs_shift: error: no finished victim siba-r0.05 in {run / 'victims'}",
                   "asr_vs_shift: error: --test-fraction must be in (0, 1], got 0"]
    assert not (tmp_path / "x.json").exists()


def test_make_rot20_builds_twice_the_classes_from_disjoint_images_rotated_exactly(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from siba.data import load_dataset
    from siba.runtime import read_json

    mk = _load("make_rot20")
    out = tmp_path / "rot"
    assert mk.main(["cifar10-mini", str(out), "--train-per-class", "6", "--test-per-class", "3",
                    "--size", "32", "--seed", "1"]) == 0
    src = load_dataset("cifar10-mini", progress=False)
    got = load_dataset(str(out), progress=False)
    assert got.num_classes == 20 and got.image_shape == (3, 32, 32)
    assert len(got.train) == 120 and len(got.test) == 60
    m = read_json(out / "manifest.json")
    assert m["classes"] == got.train.classes and "airplane-rot180" in m["classes"]
    for split, ds in (("train", src.train), ("test", src.test)):
        for name in ("cat", "cat-rot180"):
            first = ds.images[m["source_index"][split][name][0]].permute(1, 2, 0).numpy()
            png = np.asarray(Image.open(out / split / name / "0000.png"))
            assert np.array_equal(png, first[::-1, ::-1] if name.endswith("rot180") else first)
        used = [i for idx in m["source_index"][split].values() for i in idx]
        assert len(used) == len(set(used))  # an image is in one class only
        cat = src.train.classes.index("cat")
        assert all(int(ds.labels[i]) == cat for i in m["source_index"][split]["cat-rot180"])
    # a second build into the same folder is one line, and writes nothing
    assert mk.main(["cifar10-mini", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert mk.main(["cifar10-mini", str(tmp_path / "big")]) == 2  # the mini set has 500 a class, 800 needed
    assert not (tmp_path / "big").exists() and not (tmp_path / ".big.partial").exists()


def test_nc_mask_on_trigger_reports_the_share_on_the_trigger_and_its_mirror(tmp_path, capsys):
    from siba.attacks import BlendTrigger

    nc_mask_on_trigger = _load("nc_mask_on_trigger")
    alpha = torch.zeros(3, 8, 8)
    alpha[:, 0:2, 6:8] = 1.0  # the attack's 2×2 patch, top right
    BlendTrigger(torch.ones(3, 8, 8), alpha, num_classes=10, target=0).save(tmp_path / "trigger")
    mask = torch.zeros(3, 8, 8)
    mask[:, 0, 0] = 0.5  # on the patch's mirror image
    mask[:, 5, 5] = 0.5  # elsewhere
    BlendTrigger(torch.zeros(3, 8, 8), mask, num_classes=10, target=0).save(tmp_path / "class-0")
    assert nc_mask_on_trigger.main([str(tmp_path / "class-0.safetensors"), str(tmp_path / "trigger.safetensors")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target_mask_on_trigger"] == 0.5 and out["trigger_region_share"] == 0.125 and out["mask_l1"] == 1.0
    assert nc_mask_on_trigger.main([str(tmp_path / "nope.safetensors"), str(tmp_path / "trigger.safetensors")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_lpips_blend_resolution_scores_smooth_upsampled_images_far_above_sharp_photographs(tmp_path, capsys):
    pytest.importorskip("skimage")
    lb = _load("lpips_blend_resolution")
    out = tmp_path / "lpips.json"
    assert lb.main(["--count", "16", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {r["set"]: r for r in data["rows"]}
    photos, small, upsampled = rows["photographs"], rows["cifar10-mini"], rows["cifar10-mini-x4"]
    assert photos["size"] == [3, 128, 128] and upsampled["size"] == [3, 128, 128] and small["size"] == [3, 32, 32]
    assert small["count"] == upsampled["count"] == 16 and photos["count"] >= 3
    # the same noise at the same opacity: far more perceptible on smooth upsampled images than on sharp ones
    assert upsampled["lpips"] > 2 * photos["lpips"] > 0
    assert data["command"].startswith("python scripts/lpips_blend_resolution.py")
    assert "LPIPS of Blended noise" in capsys.readouterr().out
    assert lb.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()
