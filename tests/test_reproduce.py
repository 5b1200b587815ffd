"""``siba reproduce``: the registry of paper items, their plans at every scale, bad requests, and two
items run end to end (at a shrunk quick scale: tiny models, so that the test takes seconds)."""

from __future__ import annotations

import copy

import pytest

from siba.cli.main import main
from siba.errors import SibaError
from siba.registry import Registry
from siba.reproduce import ITEMS, SCALES, check_request, item_table
from siba.reproduce import scales as scales_mod
from siba.runtime import read_json

from .test_cli import expect_user_error

ISSUE_ITEMS = {"table1", "table2", "table3", "table4", "table5", "figure3", "figure4", "figure5", "figure6",
               "figure7", "figure8", "figure9", "figure10", "figure11", "figure12", "figure13", "all-to-all",
               "figure14-15"}


def test_the_registry_lists_every_item_of_the_paper():
    assert set(ITEMS) == ISSUE_ITEMS
    listing = item_table()
    for name in ISSUE_ITEMS:
        assert name in listing
        assert set(ITEMS[name].costs) == set(SCALES), name


def test_a_registry_refuses_a_name_twice_and_an_unknown_name_in_one_line():
    reg = Registry("thing")
    reg.add("a", 1, "the first")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)
    with pytest.raises(SibaError, match=r"unknown thing 'b'; choose from a$"):
        reg.lookup("b")
    assert reg.describe() == {"a": "the first"}


@pytest.mark.parametrize("scale", SCALES)
def test_every_item_plans_checked_configs_at_every_scale(scale, tmp_path):
    for name, item in ITEMS.items():
        init = {a: str(_touch(tmp_path / f"{a}.pth")) for a in item.pretrained} if scale == "paper" else None
        plan = item.plan(scale, "faces" if item.needs_data else None, init=init)
        assert plan.runs, name
        names = [r.name for r in plan.runs]
        assert len(set(names)) == len(names), name
        for run in plan.runs:
            assert run.share is None or run.share in names[:names.index(run.name)], (name, run.name)
            assert run.config.attacks, name
            if scale != "paper":  # quick and cpu victims train without the random crop (said on every page)
                assert run.config.victim.train.crop_pad == 0, name
        if plan.defense:
            assert plan.defense[0] in {"abl", "scale-up", "neural-cleanse", "fine-pruning", "strip", "grad-cam"}


def test_seeds_repeat_every_run_with_moved_seeds():
    item = ITEMS["figure3"]
    one = item.plan("quick")
    three = item.plan("quick", seeds=[0, 1, 2])
    assert len(three.runs) == 3 * len(one.runs)
    run = next(r for r in three.runs if r.name == "t3-s2")
    assert run.share == "t0-s2" and run.config.seed == 2 and run.config.target == 3
    assert run.config.victim.train.seed == one.runs[0].config.victim.train.seed + 2


def test_table2_needs_a_face_data_set():
    with pytest.raises(SibaError, match="table2 needs --data"):
        ITEMS["table2"].plan("quick")
    messages = []
    chosen = check_request(["all"], "quick", 1, "serial", None, log=messages.append)
    assert "table2" not in {i.name for i in chosen} and any("table2" in m for m in messages)


def _touch(path):
    path.write_bytes(b"")
    return path


def test_table2_models_at_each_scale(tmp_path):
    """Quick/cpu: a narrow ResNet-18 with the ImageNet stem from scratch; paper: ResNet-18 and VGG-16 from the
    ImageNet weights named with --init (required), with ImageNet normalisation and the paper's face schedule;
    the face BadNets and UBW-P patch is all white, 20×20 (the paper's L0 of 400)."""
    item = ITEMS["table2"]
    quick = item.plan("quick", "faces").runs[0].config
    assert (quick.victim.model, quick.victim.model_args) == ("resnet18", {"width": 16, "stem": "imagenet"})
    assert quick.surrogate.model_args == quick.victim.model_args and quick.victim.init is None
    assert quick.attacks["badnets"]["size"] == 20 and quick.attacks["ubw-p"]["pattern"] == "white"
    assert quick.attacks["siba"]["k"] == 1600 and quick.image_size == 128
    # ISSBA's encoder at 128×128: fewer steps on a CPU (Table I's 1,500 would take an hour), a longer warmup
    assert {k: quick.attacks["issba"].get(k) for k in ("steps", "batch_size", "warmup")} == \
        {"steps": 600, "batch_size": None, "warmup": 0.35}
    assert ITEMS["table1"].plan("quick").runs[0].config.attacks["issba"]["steps"] == 1500
    assert "600 steps (210 on the bits alone)" in item.recipe("quick")
    assert "ResNet-18 of width 16" in item.recipe("quick") and "fastnet" not in item.recipe("quick")
    with pytest.raises(SibaError, match=r"--init resnet18=resnet18-f37072fd\.pth --init vgg16=vgg16_bn"):
        item.plan("paper", "faces")
    with pytest.raises(SibaError, match=r"--init vgg16="):
        item.plan("paper", "faces", init={"resnet18": str(_touch(tmp_path / "r.pth"))})
    init = {"resnet18": str(tmp_path / "r.pth"), "vgg16": str(_touch(tmp_path / "v.pth"))}
    runs = {r.name: r.config for r in item.plan("paper", "faces", init=init).runs}
    assert sorted(runs) == ["resnet18", "vgg16"]
    for arch, cfg in runs.items():
        for stage in (cfg.surrogate, cfg.victim):
            assert stage.model == arch and stage.init == init[arch]
            assert stage.model_args["mean"] == [0.485, 0.456, 0.406]
            assert (stage.train.epochs, stage.train.milestones) == (30, [15, 20])
    assert runs["resnet18"].victim.model_args["stem"] == "imagenet"
    # Table I at paper scale trains from scratch, and takes weights only when named
    assert all(r.config.victim.init is None for r in ITEMS["table1"].plan("paper").runs)
    with_init = ITEMS["table1"].plan("paper", init={"vgg16": init["vgg16"]}).runs
    assert [r.config.victim.init for r in with_init] == [None, init["vgg16"]]


@pytest.mark.parametrize("argv, needle", [
    (["reproduce", "table1", "--init", "resnet18"], "--init must be MODEL=FILE"),
    (["reproduce", "table1", "--init", "alexnet=a.pth"], "unknown model 'alexnet'"),
    (["reproduce", "table1", "--init", "vgg16=a.pth", "--init", "vgg16=b.pth"], "names vgg16 twice"),
    (["reproduce", "figure4", "--init", "vgg16=a.pth"], "figure4 at scale quick trains no vgg16"),
    (["reproduce", "table1", "--scale", "paper", "--init", "vgg16=a.pth"], "vgg16=a.pth: no such file"),
    (["reproduce", "table2", "--data", "faces", "--scale", "paper"], "starts resnet18 and vgg16 from ImageNet"),
    (["reproduce", "table9"], "unknown paper item 'table9'"),
    (["reproduce", "table1", "--scale", "huge"], "unknown scale 'huge'"),
    (["reproduce", "table1", "--seeds", "0"], "--seeds must be a whole number from 1 to 100"),
    (["reproduce", "table1", "--executor", "spark"], "unknown executor 'spark'"),
    (["reproduce"], "name a paper item"),
    (["reproduce", "all", "table1"], "all stands alone"),
    (["reproduce", "table2"], "table2 needs --data"),
])
def test_bad_requests_are_one_line_errors(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    expect_user_error(capsys, argv, needle)
    assert not any(tmp_path.iterdir())


def test_list_shows_items_scales_and_costs(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "figure13" in out and "quick:" in out and "paper:" in out and "GPU" in out


@pytest.fixture
def tiny_quick(monkeypatch):
    """The quick scale shrunk to tiny models, 2 epochs and a 1-pass SIBA (the machinery, not the numbers)."""
    base = copy.deepcopy(scales_mod.BASES["quick"])
    for stage in ("surrogate", "victim"):
        base[stage]["model_args"] = {"widths": [8, 16, 16, 32]}
        base[stage]["train"].update(epochs=2, precision="fp32")
    monkeypatch.setitem(scales_mod.BASES, "quick", base)
    monkeypatch.setitem(scales_mod._SIBA, "quick", {"k": 50, "eps": "8/255", "alpha": "2/255", "passes": 1,
                                                    "max_images": 500})


def test_figure13_draws_its_grid_of_pairs_with_a_gap_for_a_missing_pair(tmp_path):
    from PIL import Image

    from siba.reproduce.items import _Figure13

    archs = _Figure13.ARCHS
    cells = {(s, v): [0.9 if s == v else 0.5] for s in archs for v in archs if (s, v) != (archs[0], archs[-1])}
    _Figure13._heatmap(cells, tmp_path / "figure13.png")
    with Image.open(tmp_path / "figure13.png") as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 200
        colours = len(im.convert("RGB").getcolors(1 << 24))
    assert colours > 20  # cells, text and colour bar, not a blank canvas


@pytest.mark.slow  # ~95 s on a 2-core AMD EPYC: four items on the shipped subset (tiny models)
def test_two_quick_items_end_to_end(tiny_quick, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "all-to-all", "table4", "--quiet"]) == 0
    for item in ("all-to-all", "table4"):
        out = tmp_path / "results" / "reproduce" / item / "quick"
        page = (out / "item.md").read_text()
        data = read_json(out / "data.json")
        assert data["item"] == item and data["scale"] == "quick" and data["machine"]["cores"] >= 1
        assert "flip only" in page and "Command: `siba reproduce all-to-all table4 --quiet`" in page
    rows = read_json(tmp_path / "results/reproduce/all-to-all/quick/data.json")["data"]["rows"]
    assert {r["attack"] for r in rows} == {"badnets", "siba"} and all(r["rate"] == 0.2 for r in rows)
    assert "(y + 1) mod K" in (tmp_path / "results/reproduce/all-to-all/quick/item.md").read_text()
    scale_up = read_json(tmp_path / "results/reproduce/table4/quick/data.json")["data"]["rows"]
    assert {r["victim"] for r in scale_up} == {"badnets-r0.1", "blended-r0.1", "siba-r0.1"}
    assert all(isinstance(r["auroc"], float) for r in scale_up)
    badnets = next(r for r in scale_up if r["victim"] == "badnets-r0.1")
    assert badnets["asr_before"] > 0.5  # the positive control learns its backdoor even in 2 epochs
    # the defense items share their victims: STRIP's item trains none, and Figure 12 makes triggers only
    victims = tmp_path / "runs/reproduce/defenses/quick/victims/victims"
    models = sorted(victims.glob("*/model.safetensors"))
    assert len(models) == 3
    stamps = [m.stat().st_mtime_ns for m in models]
    assert main(["reproduce", "figure10", "figure12", "--quiet"]) == 0
    assert [m.stat().st_mtime_ns for m in models] == stamps
    strip = read_json(tmp_path / "results/reproduce/figure10/quick/data.json")["data"]["rows"]
    assert {r["victim"] for r in strip} == {"badnets-r0.1", "blended-r0.1", "siba-r0.1"}
    fig12 = tmp_path / "results/reproduce/figure12/quick"
    assert (fig12 / "item.md").is_file() and list(fig12.glob("*.png"))
    assert not list((tmp_path / "runs/reproduce/figure12/quick").glob("*/victims"))
    first = read_json(tmp_path / "results/reproduce/all-to-all/quick/data.json")
    # run again: every stage and defense result is reused, the page rewritten
    assert main(["reproduce", "all-to-all", "--quiet"]) == 0
    page = (tmp_path / "results/reproduce/all-to-all/quick/item.md").read_text()
    assert "## Against the paper" in page and "BadNets'" in page
    again = read_json(tmp_path / "results/reproduce/all-to-all/quick/data.json")
    # the compute of the stages it used does not shrink when the item is resumed (the wall time does):
    # a surrogate, two triggers and two victims, each timed once
    assert again["compute_s"] == first["compute_s"] > 0
    assert again["wall_s"] < first["wall_s"]
    assert first["versus"]["agrees"] in (True, False) and first["versus"]["text"] in page


def test_a_data_set_built_by_siba_is_named_on_the_page_with_its_manifest(tmp_path):
    """Table II's --data folder (built by `siba data vggface2-subset` or scripts/make_rot20.py): the page says
    which command built it and its manifest is kept beside the page; a set without a manifest adds nothing."""
    from siba.reproduce.runner import DATA_MANIFEST, _page, data_provenance
    from siba.runtime import write_json

    made = tmp_path / "rot20"
    made.mkdir()
    write_json(made / "manifest.json", {"format": "siba-rot20/1", "command": "python scripts/make_rot20.py A B"})
    out = tmp_path / "out"
    out.mkdir()
    assert data_provenance(None, out) is None and data_provenance(str(tmp_path), out) is None
    assert not (out / DATA_MANIFEST).exists()
    info = data_provenance(str(made), out)
    assert info == {"path": str(made), "format": "siba-rot20/1", "made_by": "python scripts/make_rot20.py A B",
                    "manifest": DATA_MANIFEST}
    assert read_json(out / DATA_MANIFEST)["command"] == "python scripts/make_rot20.py A B"
    meta = {"machine": {"cores": 2, "cpu": "cpu", "torch": "2"}, "scale": "quick", "recipe": "r", "seeds": 1,
            "command": "siba reproduce table2", "git_revision": "abc", "wall_s": 1.0, "compute_s": 1.0,
            "data_set": info}
    page = _page(ITEMS["table2"], meta, "body")
    assert f"Data set: `{made}`, built by `python scripts/make_rot20.py A B`" in page
    assert f"]({DATA_MANIFEST})" in page
    assert "Data set" not in _page(ITEMS["table2"], {**meta, "data_set": None}, "body")
