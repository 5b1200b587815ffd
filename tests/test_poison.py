"""Poisoning: counts, labels, eligibility, seeding; export read back equal; manifest."""

from __future__ import annotations

import json

import pytest
import torch

from siba.attacks import create_attack
from siba.errors import SibaError
from siba.poisoning import export_poisoned, load_exported, poison_count, poison_dataset, read_manifest
from siba.runtime import file_sha256

from .conftest import make_set


@pytest.fixture
def data():
    return make_set(200, classes=4, size=8, seed=0)


def test_counts_labels_and_eligibility(data):
    trig = create_attack("badnets", size=2, target=1).generate(data)
    p = poison_dataset(data, trig, 0.1, seed=0)
    assert p.indices.numel() == 20 == poison_count(200, 0.1)
    assert (data.labels[p.indices] != 1).all()  # none from the target class
    assert (p.data.labels[p.indices] == 1).all()
    assert torch.equal(p.original_labels, data.labels[p.indices])
    others = torch.ones(200, dtype=torch.bool)
    others[p.indices] = False
    assert torch.equal(p.data.images[others], data.images[others])  # the rest untouched
    assert torch.equal(p.data.labels[others], data.labels[others])
    assert not torch.equal(p.data.images[p.indices], data.images[p.indices])
    assert torch.equal(p.data.images[p.indices], trig.apply_uint8(data.images[p.indices]))
    assert torch.equal(p.indices, p.indices.sort().values)


def test_seeded_choice(data):
    trig = create_attack("random", k=4, eps=0.1).generate(data)
    a = poison_dataset(data, trig, 0.05, seed=1).indices
    b = poison_dataset(data, trig, 0.05, seed=1).indices
    c = poison_dataset(data, trig, 0.05, seed=2).indices
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_floor_of_rate_times_n():
    assert poison_count(50_000, 0.01) == 500
    assert poison_count(50_000, 0.003) == 150
    assert poison_count(199, 0.01) == 1
    assert poison_count(99, 0.01) == 0


def test_all_to_all_relabels_to_next_class(data):
    trig = create_attack("badnets", size=2, all_to_all=True).generate(data)
    p = poison_dataset(data, trig, 0.25, seed=0)
    assert p.indices.numel() == 50
    assert torch.equal(p.data.labels[p.indices], (data.labels[p.indices] + 1) % 4)
    assert (data.labels[p.indices] == 0).any()  # the all-to-all attack poisons every class


@pytest.mark.parametrize("rate, message", [(0.0, "in \\(0, 1\\)"), (1.0, "in \\(0, 1\\)"), (-0.1, "in \\(0, 1\\)"),
                                           (0.001, "poisons no sample"), (0.9, "eligible")])
def test_bad_rates(data, rate, message):
    trig = create_attack("badnets", size=2).generate(data)
    with pytest.raises(SibaError, match=message):
        poison_dataset(data, trig, rate)


def test_trigger_must_fit_data(data):
    trig = create_attack("badnets", size=2).generate(make_set(10, classes=4, size=16))
    with pytest.raises(SibaError, match="16×16"):
        poison_dataset(data, trig, 0.1)


def test_export_reads_back_equal(tmp_path, data):
    trig = create_attack("random", k=6, eps=8 / 255, target=2, seed=4).generate(data)
    trig.save(tmp_path / "trigger")
    p = poison_dataset(data, trig, 0.1, seed=3)
    test = make_set(40, classes=4, size=8, seed=9)
    out = export_poisoned(p, tmp_path / "export", trigger_file=tmp_path / "trigger", test_set=test)
    back = load_exported(out)
    assert torch.equal(back.images, p.data.images)  # PNG is lossless: bit-for-bit
    assert torch.equal(back.labels, p.data.labels)
    manifest = read_manifest(out)
    assert manifest["poisoned_indices"] == p.indices.tolist()
    assert manifest["original_labels"] == p.original_labels.tolist()
    assert manifest["rate"] == 0.1 and manifest["target"] == 2 and manifest["target_rule"] == "all-to-one"
    assert manifest["trigger"]["sha256"] == file_sha256(out / manifest["trigger"]["file"])
    assert manifest["trigger"]["sha256"] == file_sha256(tmp_path / "trigger.safetensors")
    for rel, idx in zip(manifest["poisoned_files"], manifest["poisoned_indices"]):
        assert rel.startswith("c2/") and int(rel.split("/")[1][:-4]) == idx
    # a complete data set: `siba train --data` can read it
    from siba.data import load_dataset

    splits = load_dataset(out)
    assert len(splits.train) == 200 and len(splits.test) == 40
    assert json.loads((out / "manifest.json").read_text())["num_poisoned"] == 20


def test_export_refuses_non_empty_folder(tmp_path, data):
    trig = create_attack("badnets", size=2).generate(data)
    p = poison_dataset(data, trig, 0.1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(SibaError, match="not empty"):
        export_poisoned(p, tmp_path / "busy")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["busy"]  # nothing half-written beside it


def _fail_on_third_png(monkeypatch, exc: BaseException) -> list:
    import siba.poisoning.poison as poison_mod

    written: list = []
    real = poison_mod._write_png

    def flaky(path, chw):
        if len(written) == 2:
            raise exc
        real(path, chw)
        written.append(path)

    monkeypatch.setattr(poison_mod, "_write_png", flaky)
    return written


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_export_leaves_nothing_it_created(tmp_path, data, monkeypatch, exc):
    trig = create_attack("badnets", size=2).generate(data)
    p = poison_dataset(data, trig, 0.1)
    (tmp_path / "keep").mkdir()  # an existing folder: kept
    out = tmp_path / "keep" / "new" / "deeper" / "export"
    written = _fail_on_third_png(monkeypatch, exc)
    with pytest.raises(type(exc)):
        export_poisoned(p, out)
    assert len(written) == 2  # it failed midway, after writing files
    assert not out.exists()
    assert not (tmp_path / "keep" / "new").exists()  # the parents it made are gone too
    assert [x.name for x in tmp_path.iterdir()] == ["keep"] and not any((tmp_path / "keep").iterdir())


def test_failed_write_is_a_one_line_error_and_keeps_an_empty_out(tmp_path, data, monkeypatch):
    trig = create_attack("badnets", size=2).generate(data)
    p = poison_dataset(data, trig, 0.1)
    out = tmp_path / "empty"
    out.mkdir()  # an existing empty folder is accepted, and still there after a failure
    _fail_on_third_png(monkeypatch, OSError(28, "No space left on device"))
    with pytest.raises(SibaError, match="could not write the poisoned set to .*No space left on device"):
        export_poisoned(p, out)
    assert out.is_dir() and not any(out.iterdir())
    assert [x.name for x in tmp_path.iterdir()] == ["empty"]


def test_export_under_a_file_is_a_one_line_error(tmp_path, data):
    trig = create_attack("badnets", size=2).generate(data)
    p = poison_dataset(data, trig, 0.1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SibaError, match="cannot create the output folder"):
        export_poisoned(p, tmp_path / "file" / "sub" / "export")
    with pytest.raises(SibaError, match="is not a folder"):
        export_poisoned(p, tmp_path / "file")
    assert [x.name for x in tmp_path.iterdir()] == ["file"] and (tmp_path / "file").read_text() == "x"


def test_a_failed_final_rename_puts_back_the_empty_out_folder(tmp_path, data, monkeypatch):
    from pathlib import Path

    trig = create_attack("badnets", size=2).generate(data)
    p = poison_dataset(data, trig, 0.1)
    out = tmp_path / "empty"
    out.mkdir()  # removed just before the rename, so the rename's failure must restore it
    real_rename = Path.rename

    def failing_rename(self, target):
        if Path(target) == out:
            raise OSError(18, "Invalid cross-device link")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(SibaError, match="could not write the poisoned set"):
        export_poisoned(p, out)
    assert out.is_dir() and not any(out.iterdir())
    assert [x.name for x in tmp_path.iterdir()] == ["empty"]  # and the temporary tree is gone
