"""Each paper item's page says whether ours has the paper's shape (``siba.reproduce.versus``), and how
much compute its stages took (``compute_seconds``: each stage once, however many runs share it)."""

from __future__ import annotations

import pytest

from siba.reproduce import ITEMS, rejudge
from siba.reproduce import versus as vs
from siba.reproduce.runner import compute_seconds
from siba.errors import SibaError
from siba.runtime import read_json, write_json


def test_every_item_with_a_claim_has_a_check():
    without = {name for name in ITEMS if ITEMS[name].versus is None}
    assert without == {"figure12"}  # the triggers themselves: images, no claim to check


def _rows(**by_attack):
    return [{"attack": a, "kind": a, "asr": asr, "l0": l0, "linf": linf} for a, (asr, l0, linf) in by_attack.items()]


def test_table_check_counts_only_attacks_within_sibas_budget():
    eps = 8 / 255
    rows = _rows(clean=(None, None, None), badnets=(1.0, 9, 1.0), sparse=(0.2, 99.9, eps), random=(0.02, 100, eps),
                 siba=(0.98, 100, eps))
    agrees, ours = vs.table_check({"rows": {"main": rows}})
    assert agrees is True and "SIBA's is the highest." in ours and "badnets" not in ours  # BadNets: L∞ 1
    rows[2]["asr"] = 0.99  # Sparse beat SIBA: the paper's claim fails
    agrees, ours = vs.table_check({"rows": {"main": rows}})
    assert agrees is False and "as high as SIBA's or higher: sparse." in ours
    rows[2]["asr"], rows[4]["asr"] = 0.2, 0.6  # the highest, but SIBA did not succeed either
    agrees, ours = vs.table_check({"rows": {"main": rows}})
    assert agrees is False and "SIBA's is the highest but under 80%." in ours


@pytest.mark.parametrize("after, agrees", [(0.8, True), (0.3, False)])
def test_a_defense_that_removes_most_of_sibas_asr_differs_from_the_paper(after, agrees):
    data = {"rows": [{"victim": "badnets-r0.01", "asr_before": 1.0, "asr_after": 0.0},
                     {"victim": "siba-r0.01", "asr_before": 0.9, "asr_after": after}]}
    text, got = vs.ABL.render(data, "cpu")
    assert got is agrees and f"{100 * after:.1f}% after" in text
    assert ("Why: not examined yet." in text) is (not agrees)


def test_a_known_difference_carries_its_why():
    check = vs.Versus("x rises.", lambda d: (False, "it falls."), why={"quick": "Because the rate is 10×."})
    text, agrees = check.render({}, "quick")
    assert agrees is False and text.endswith("**Differs from the paper in shape.** Because the rate is 10×.")
    assert "not examined" in check.render({}, "cpu")[0]


def test_missing_data_is_not_comparable_rather_than_an_error():
    text, agrees = vs.RATE.render({"asr": {"SIBA": {"0.01": [0.9]}}}, "cpu")  # no Sparse or Random series
    assert agrees is None and "Not comparable yet" in text


def test_sweep_check_wants_siba_first_to_90_and_never_below_the_baselines():
    good = {"asr": {"SIBA": {"0.005": [0.95], "0.01": [0.99]}, "Sparse": {"0.005": [0.1], "0.01": [0.92]},
                    "Random": {"0.005": [0.01], "0.01": [0.02]}}}
    agrees, ours = vs.RATE.check(good)
    assert agrees is True and "SIBA reaches 80% at rate = 0.5%" in ours and "Random never reaches 80%" in ours
    bad = {"asr": {**good["asr"], "Sparse": {"0.005": [0.97], "0.01": [0.99]}}}
    assert vs.RATE.check(bad)[0] is False


def test_targets_settings_transfer_and_amplified_checks():
    assert vs.TARGETS.check({"asr": {"SIBA": {"0": [0.95], "3": [0.91]}}})[0] is True
    assert vs.TARGETS.check({"asr": {"SIBA": {"0": [0.85], "3": [0.8]}}})[0] is True  # 80%: a scale's level
    assert vs.TARGETS.check({"asr": {"SIBA": {"0": [0.85], "3": [0.79]}}})[0] is False
    agrees, ours = vs.TARGETS.check({"asr": {"SIBA": {"0": [0.95], "3": [0.5]}}})
    assert agrees is False and "target 3." in ours
    assert vs.SETTINGS.check({"alpha": {"asr": {"SIBA": {"1": [0.9], "2": [0.95]}}}})[0] is True
    assert vs.SETTINGS.check({"alpha": {"asr": {"SIBA": {"1": [0.5], "2": [0.95]}}}})[0] is False
    assert vs.TRANSFER.check({"asr": {"a->a": [0.9], "a->b": [0.85]}})[0] is True
    assert vs.TRANSFER.check({"asr": {"a->a": [0.9], "a->b": [0.2]}})[0] is False
    rising = [{"rate": 0.02, "a": a, "asr": v} for a, v in ((1, 0.4), (2, 0.8), (4, 0.99))]
    assert vs.AMPLIFIED.check({"rows": rising})[0] is True
    assert vs.AMPLIFIED.check({"rows": [{**r, "asr": 0.5} for r in rising]})[0] is False  # flat: not better


def test_compute_counts_each_stage_once_and_every_defense_result(tmp_path):
    for run in ("t0", "t1"):  # t1 shares t0's surrogate (a copy with the same digest)
        write_json(tmp_path / run / "surrogate/stage.json", {"digest": "s"})
        write_json(tmp_path / run / "surrogate/summary.json", {"wall_s": 100.0})
        write_json(tmp_path / run / "triggers/siba/stage.json", {"digest": f"trig-{run}"})
        write_json(tmp_path / run / "triggers/siba/timing.json", {"wall_s": 5.0})
        write_json(tmp_path / run / "victims/siba-r0.1/stage.json", {"digest": f"vic-{run}"})
        write_json(tmp_path / run / "victims/siba-r0.1/summary.json", {"wall_s": 50.0})
    write_json(tmp_path / "t1/victims/unfinished/stage.json", {"digest": "u"})  # no timing yet: not counted
    write_json(tmp_path / "t0/defenses/strip/siba-r0.1/result.json", {"wall_s": 7.0})
    runs = [tmp_path / "t0", tmp_path / "t1"]
    assert compute_seconds(runs) == 100 + 2 * 5 + 2 * 50
    assert compute_seconds(runs, [tmp_path / "t0/defenses/strip"]) == 217


def test_a_defense_that_misses_the_positive_control_says_nothing_about_siba():
    rows = [{"victim": "badnets-r0.1", "asr_before": 1.0, "asr_after": 0.99},  # ABL left BadNets alone
            {"victim": "siba-r0.1", "asr_before": 0.9, "asr_after": 0.8}]
    text, agrees = vs.ABL.render({"rows": rows}, "quick")
    assert agrees is None and "positive control (BadNets) is not caught either" in text
    strip = [{"victim": "badnets-r0.01", "auroc": 0.9, "tpr": 0.03, "fpr": 0.01},
             {"victim": "siba-r0.01", "auroc": 0.89, "tpr": 0.2, "fpr": 0.006}]
    assert vs.STRIP.check({"rows": strip})[0] is False  # the entropies separate: not the paper's mixed ones
    strip[0]["auroc"] = 0.6
    assert vs.STRIP.check({"rows": strip})[0] is None


def test_rejudge_rewrites_a_committed_verdict_from_its_data_alone(tmp_path):
    item = ITEMS.lookup("figure3")
    data = {"asr": {"SIBA": {"0": [0.85], "5": [0.2]}}}
    stale = "The paper: x\n\nOurs: y\n\n**Same shape as the paper.**"
    out = tmp_path / "figure3" / "quick"
    write_json(out / "data.json", {"item": "figure3", "versus": {"text": stale, "agrees": True}, "data": data})
    (out / "item.md").write_text(f"# Figure 3\n\nbody\n\n## Against the paper\n\n{stale}\n\nCommand: `c`\n")
    assert rejudge(item, "quick", tmp_path) is True
    page = (out / "item.md").read_text()
    assert "below 80% for target 5." in page and "body" in page and page.endswith("Command: `c`\n")
    assert stale not in page
    assert read_json(out / "data.json")["versus"]["agrees"] is False
    assert rejudge(item, "quick", tmp_path) is False  # judged already: nothing to change
    assert rejudge(item, "cpu", tmp_path) is None  # nothing committed at that scale
    (out / "item.md").write_text("# edited by hand\n")
    write_json(out / "data.json", {"item": "figure3", "versus": {"text": stale, "agrees": True}, "data": data})
    with pytest.raises(SibaError, match="rerun `siba reproduce figure3"):
        rejudge(item, "quick", tmp_path)


def test_rejudge_from_the_command_line_runs_nothing(tmp_path, capsys):
    from siba.cli.main import main

    data = {"asr": {"SIBA": {"0": [0.85], "5": [0.2]}}}
    out = tmp_path / "figure3" / "quick"
    write_json(out / "data.json", {"item": "figure3", "versus": {"text": "old", "agrees": True}, "data": data})
    (out / "item.md").write_text("## Against the paper\n\nold\n")
    assert main(["reproduce", "figure3", "figure12", "figure4", "--rejudge", "--results", str(tmp_path),
                 "--runs", str(tmp_path / "no-runs")]) == 0
    said = capsys.readouterr().out
    assert "figure3 (quick): judged again" in said and "figure12 (quick): no claim to judge" in said
    assert "figure4 (quick): no committed page" in said
    assert not (tmp_path / "no-runs").exists() and "below 80% for target 5." in (out / "item.md").read_text()
