from __future__ import annotations

from PIL import Image

from siba.report import line_chart


def test_line_chart_writes_a_png(tmp_path):
    out = line_chart(tmp_path / "c.png", {"α=0.2·ε": [(1, 2.0), (2, 3.0)], "b": [(1, 1.0), (2, float("nan"))]},
                     title="t", xlabel="passes", ylabel="%")
    with Image.open(out) as im:
        assert im.size == (640, 400)
        assert len(im.convert("RGB").getcolors(1 << 16)) > 3  # lines and text were drawn


def test_asr_curves_chart_every_victim_with_a_tracked_asr(tmp_path):
    from siba.report.markdown import asr_curves, epoch_series

    header = "epoch,lr,train_loss,train_acc,asr,wall_s,test_acc\n"
    for name, asr in (("siba", [0.05, 0.2, 0.4]), ("badnets", [0.9, 0.99, 1.0])):
        folder = tmp_path / "victims" / f"{name}-r0.01"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(header + "".join(
            f"{e},0.1,1.0,0.5,{a},{e * 10},{'0.8' if e == 3 else ''}\n" for e, a in enumerate(asr, 1)))
    assert epoch_series(tmp_path / "victims/siba-r0.01/metrics.csv", "asr") == [(1, 0.05), (2, 0.2), (3, 0.4)]
    assert epoch_series(tmp_path / "victims/siba-r0.01/metrics.csv", "test_acc") == [(3, 0.8)]
    assert epoch_series(tmp_path / "missing.csv", "asr") == []
    rows = [{"attack": "siba", "rate": 0.01}, {"attack": "badnets", "rate": 0.01}, {"attack": "random", "rate": 0.05}]
    lines = asr_curves(tmp_path, rows)
    assert lines == ["![ASR after each epoch of victim training at 1%](asr_during_training_r0.01.png)", ""]
    with Image.open(tmp_path / "asr_during_training_r0.01.png") as im:
        assert len(im.convert("RGB").getcolors(1 << 16)) > 3
    assert not (tmp_path / "asr_during_training_r0.05.png").exists()  # no tracked curve at that rate


def test_line_chart_draws_the_goal_line_in_grey_inside_the_y_range_only(tmp_path):
    from siba.figures import REFERENCE_COLOUR

    grey = tuple(int(REFERENCE_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    series = {"a": [(1, 10.0), (2, 20.0)]}

    def grey_pixels(path):
        with Image.open(path) as im:
            return sum(n for n, c in im.convert("RGB").getcolors(1 << 16) if c == grey)

    with_line = grey_pixels(line_chart(tmp_path / "in.png", series, ylim=(0, 100), hline=(90.0, "90%"), legend=False))
    outside = grey_pixels(line_chart(tmp_path / "out.png", series, ylim=(0, 50), hline=(90.0, "90%"), legend=False))
    plain = grey_pixels(line_chart(tmp_path / "plain.png", series, ylim=(0, 100), legend=False))
    assert plain < 20 and outside < 20  # a few anti-aliased pixels of other lines
    assert with_line > 150  # dashed across the plot area


def test_by_class_table_names_the_classes_and_skips_victims_without_the_breakdown():
    from siba.report.markdown import by_class_table

    rows = [{"attack": "siba", "rate": 0.05, "asr_by_class": [None, 0.5, 0.875]},
            {"attack": "random", "rate": 0.05}]
    table = by_class_table(rows, ["plane", "car", "bird"]).splitlines()
    assert table[0] == "| attack | rate | plane | car | bird |"
    assert table[2] == "| siba | 5% | – | 50.00 | 87.50 |"
    assert len(table) == 3  # the row without asr_by_class is left out
    assert by_class_table(rows[1:]) == ""
    assert by_class_table(rows[:1])[:30].startswith("| attack | rate | 0 | 1 | 2 |")  # no names: indices


def _settings_lines(tmp_path, surrogate: dict, sur_summary: dict) -> list[str]:
    from siba.experiments import parse_config
    from siba.report.markdown import write_report

    cfg = parse_config({"name": "t", "surrogate": surrogate, "attacks": {"siba": {"k": 4}}})
    results = {"results": [{"attack": "siba", "rate": 0.01, "ba": 0.9, "asr": 0.95}], "train_images": 40,
               "test_images": 8, "surrogate": sur_summary, "clean": {}, "wall_s": 1}
    text = write_report(tmp_path, cfg, results, {}).read_text()
    return [line for line in text.splitlines() if line.startswith("- surrogate:")]


def test_report_names_the_epochs_of_a_trained_surrogate(tmp_path):
    lines = _settings_lines(tmp_path, {"model": "fastnet", "train": {"epochs": 7}}, {"test_acc": 0.5})
    assert len(lines) == 1
    assert lines[0].startswith("- surrogate: `fastnet`") and "7 epochs" in lines[0]
    assert "test accuracy 50.00%" in lines[0] and "loaded from" not in lines[0]


def test_report_of_a_loaded_surrogate_names_its_file_not_epochs(tmp_path):
    from siba.models import create_model, save_model

    path = tmp_path / "sur.safetensors"
    save_model(create_model("resnet18", 10, width=4), path)
    # the config's model name and training recipe are not what was used: the file was
    lines = _settings_lines(tmp_path, {"model": "fastnet", "path": str(path)}, {"path": str(path), "test_acc": 0.25})
    assert lines == [f"- surrogate: loaded from `{path}` (`resnet18` {{'width': 4}}), test accuracy 25.00%"]
    assert "epochs" not in lines[0] and "fastnet" not in lines[0]


def test_report_of_a_loaded_surrogate_whose_file_is_gone(tmp_path):
    missing = tmp_path / "moved.safetensors"
    lines = _settings_lines(tmp_path, {"model": "vgg16", "path": str(missing)}, {"path": str(missing)})
    assert lines == [f"- surrogate: loaded from `{missing}` (`vgg16`)"]
