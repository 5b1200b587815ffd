"""Blended, WaNet and UBW-P: each poisoned image obeys its own definition, triggers survive a
save/load round trip bit for bit, bad settings are one-line errors, and each runs end to end."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from siba.attacks import RandomLabels, create_attack, load_trigger
from siba.metrics import dispersibility
from siba.attacks.blended import default_pattern_file, read_pattern
from siba.attacks.wanet import identity_grid, warp_field
from siba.cli.main import main
from siba.errors import SibaError
from siba.metrics import evaluate_attack
from siba.poisoning import poison_dataset

from .conftest import make_set


def _x(n=6, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- Blended


def test_blend_ratio_is_exact_and_linf_is_alpha_bounded():
    data = make_set(32, size=16)
    mark = create_attack("blended", alpha=0.2).generate(data)
    x = _x()
    xp = mark.apply(x)
    p = mark.pattern
    assert torch.allclose(xp, 0.8 * x + 0.2 * p, atol=1e-6)
    moved = (p - x).abs() > 1e-3
    ratio = ((xp - x) / (p - x))[moved]
    assert torch.allclose(ratio, torch.full_like(ratio, 0.2), atol=1e-4)
    assert float((xp - x).abs().max()) <= 0.2 + 1e-6
    assert torch.equal(mark.alpha, torch.full_like(mark.alpha, 0.2))


def test_blend_pattern_is_the_shipped_photograph_resized():
    data = make_set(8, size=16)
    mark = create_attack("blended").generate(data)
    assert torch.equal(mark.pattern, read_pattern(default_pattern_file(), 3, 16, 16))
    assert mark.pattern.std() > 0.05  # a photograph, not a flat colour
    assert "CC0" in mark.describe()["pattern_source"]


def test_blend_user_image_and_noise_pattern(tmp_path):
    from PIL import Image

    img = tmp_path / "p.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(img)
    data = make_set(8, size=8)
    mark = create_attack("blended", image=str(img), alpha=1.0).generate(data)
    assert torch.equal(mark.apply(_x(2, 8)), torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1).expand(2, 3, 8, 8))
    a = create_attack("blended", pattern="noise", seed=3).generate(data).pattern
    b = create_attack("blended", pattern="noise", seed=3).generate(data).pattern
    c = create_attack("blended", pattern="noise", seed=4).generate(data).pattern
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert 0.4 < float(a.mean()) < 0.6


@pytest.mark.parametrize("options, needle", [
    ({"alpha": 0}, "alpha must be in (0, 1]"),
    ({"alpha": 1.5}, "alpha must be in (0, 1]"),
    ({"alpha": "x"}, "alpha must be a number"),
    ({"image": "/nonexistent/cat.png"}, "not found"),
    ({"pattern": "kitty"}, "unknown blend pattern"),
])
def test_blend_bad_settings(options, needle):
    with pytest.raises(SibaError) as exc:
        create_attack("blended", **options)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_blend_image_that_is_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(SibaError, match="not an image file"):
        create_attack("blended", image=str(bad))


# ----------------------------------------------------------------------------- WaNet


def test_warp_grid_is_identity_plus_bounded_field():
    data = make_set(8, size=16)
    attack = create_attack("wanet", grid_size=4, strength=0.5, seed=2)
    mark = attack.generate(data)
    field = warp_field(4, 16, 16, torch.Generator().manual_seed(2))
    expected = (identity_grid(16, 16) + 0.5 * field / 16).clamp(-1, 1)
    assert torch.equal(mark.grid, expected)
    disp = mark.grid - identity_grid(16, 16)
    assert float(disp.abs().max()) <= 0.5 * float(field.abs().max()) / 16 + 1e-7
    assert float(mark.grid.abs().max()) <= 1
    # the warp is grid_sample with that grid: an image constant along x is shifted only along y
    x = torch.linspace(0, 1, 16).view(1, 1, 16, 1).expand(1, 3, 16, 16).contiguous()
    y = mark.apply(x)
    assert float((y - x).abs().max()) > 0 and float((y - x).abs().max()) < 0.2


def test_warp_identity_at_tiny_strength_and_control_grid_mean():
    gen = torch.Generator().manual_seed(0)
    ins = torch.rand(1, 2, 4, 4, generator=gen) * 2 - 1
    field = warp_field(4, 4, 4, torch.Generator().manual_seed(0))  # upsampling to its own size keeps it
    assert torch.allclose(field.permute(2, 0, 1), (ins / ins.abs().mean())[0], atol=1e-5)
    mark = create_attack("wanet", strength=1e-9).generate(make_set(8, size=16))
    x = _x(2)
    assert torch.allclose(mark.apply(x), x, atol=1e-5)


def test_wanet_noise_mode_adds_cover_samples_with_their_labels():
    data = make_set(200, classes=4, size=16)
    mark = create_attack("wanet", target=1).generate(data)
    poisoned = poison_dataset(data, mark, 0.05, seed=0)
    assert len(poisoned.indices) == 10 and len(poisoned.cover_indices) == 20
    assert not set(poisoned.indices.tolist()) & set(poisoned.cover_indices.tolist())
    cov = poisoned.cover_indices
    assert torch.equal(poisoned.data.labels[cov], data.labels[cov])  # labels kept
    assert not torch.equal(poisoned.data.images[cov], data.images[cov])
    assert (poisoned.data.labels[poisoned.indices] == 1).all()
    manifest = poisoned.manifest()
    assert manifest["cover_indices"] == cov.tolist()
    off = create_attack("wanet", noise=False, target=1).generate(data)
    plain = poison_dataset(data, off, 0.05, seed=0)
    assert plain.cover_indices.numel() == 0 and torch.equal(plain.indices, poisoned.indices)
    untouched = torch.ones(len(data), dtype=torch.bool)
    untouched[plain.indices] = False
    assert torch.equal(plain.data.images[untouched], data.images[untouched])


@pytest.mark.parametrize("options, needle", [
    ({"grid_size": 1}, "grid size must be a whole number ≥ 2"),
    ({"strength": 0}, "strength must be > 0"),
    ({"strength": -0.5}, "strength must be > 0"),
    ({"noise": "yes"}, "noise"),
    ({"noise_ratio": -1}, "noise_ratio"),
])
def test_wanet_bad_settings(options, needle):
    with pytest.raises(SibaError) as exc:
        create_attack("wanet", **options)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- UBW-P


def test_ubw_labels_are_uniform_and_fixed_per_sample():
    rule = RandomLabels(10, seed=5)
    idx = torch.arange(20000)
    labels = rule.poison_labels(torch.zeros(20000, dtype=torch.long), idx)
    counts = torch.bincount(labels, minlength=10).double()
    chi2 = float(((counts - 2000) ** 2 / 2000).sum())
    assert chi2 < 30  # 9 degrees of freedom: p ≈ 0.0004 at 30
    sub = torch.tensor([3, 17, 19999, 500])
    assert torch.equal(rule.poison_labels(torch.zeros(4, dtype=torch.long), sub), labels[sub])
    assert not torch.equal(RandomLabels(10, seed=6).poison_labels(torch.zeros(20000, dtype=torch.long), idx), labels)


def test_ubw_poisoning_draws_from_every_class_and_keeps_labels_per_sample():
    data = make_set(400, classes=4, size=8)
    mark = create_attack("ubw-p", seed=1).generate(data)
    assert mark.target_rule == "random"
    a = poison_dataset(data, mark, 0.25, seed=0)
    b = poison_dataset(data, mark, 0.5, seed=0)
    assert set(data.labels[a.indices].tolist()) == {0, 1, 2, 3}
    common = sorted(set(a.indices.tolist()) & set(b.indices.tolist()))
    assert common
    assert a.data.labels[common].tolist() == b.data.labels[common].tolist()
    # the round trip keeps the rule and its seed
    m2 = load_trigger(mark.save(_tmp_dir() / "ubw"))
    assert m2.target_rule == "random" and m2.rule.seed == 1


def _tmp_dir():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_untargeted_success_and_dispersibility():
    class Shift(torch.nn.Module):
        """Classifies by the patch: triggered images go to (y+1+corner) mod 4, clean ones correctly."""

        def __init__(self, labels):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            cls = (x[:, 0, 0, 0] * 3).round().long() % 4
            patched = x[:, :, -1, -1].sum(1) > 2.5
            out = torch.where(patched, (cls + 1) % 4, cls)
            return torch.nn.functional.one_hot(out, 4).float()

    data = make_set(64, classes=4, size=8)
    imgs = data.images.clone()
    imgs[:, 0, 0, 0] = (data.labels * 85).to(torch.uint8)
    imgs[:, :, -1, -1] = 0
    from siba.data import ImageSet

    test = ImageSet(imgs, data.labels, data.classes)
    mark = create_attack("ubw-p", pattern="white", size=1).generate(test)
    res = evaluate_attack(Shift(test.labels), test, mark)
    assert res["ba"] == 1.0 and res["asr"] == 1.0 and res["n_attacked"] == 64
    assert math.isclose(res["dispersibility"], 1.0)  # four classes, sixteen images each
    assert dispersibility(torch.zeros(10, dtype=torch.long), 4) == 0.0


# ----------------------------------------------------------------------------- all three


@pytest.mark.parametrize("name", ["blended", "wanet", "ubw-p"])
def test_round_trip_bit_for_bit(tmp_path, name):
    data = make_set(16, size=16)
    mark = create_attack(name, seed=3).generate(data)
    loaded = load_trigger(mark.save(tmp_path / name))
    x = _x(4)
    assert torch.equal(mark.apply(x), loaded.apply(x))
    xu = (x * 255).round().to(torch.uint8)
    assert torch.equal(mark.apply_uint8(xu), loaded.apply_uint8(xu))
    assert loaded.fingerprint() == mark.fingerprint()
    assert loaded.describe() == mark.describe()
    assert loaded.render(tmp_path / f"{name}.png", xu).stat().st_size > 0


@pytest.mark.slow  # ~30 s on a 2-core AMD EPYC
def test_every_comparison_attack_end_to_end_on_the_shipped_subset(tmp_path, capsys):
    raw = {"name": "cmp", "data": "cifar10-mini", "seed": 0, "target": 0, "rates": [0.1], "clean_baseline": False,
           "victim": {"model": "fastnet", "model_args": {"widths": [8, 16, 16, 32]},
                      "train": {"epochs": 2, "batch_size": 256, "lr": 0.2, "schedule": "onecycle", "crop_pad": 0,
                                "eval_every": 0}},
           "attacks": {"blended": {}, "wanet": {}, "ubw-p": {}}}
    cfg = tmp_path / "cmp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    import json

    rows = {r["attack"]: r for r in json.loads((tmp_path / "run" / "results.json").read_text())["results"]}
    assert set(rows) == {"blended", "wanet", "ubw-p"}
    assert rows["blended"]["asr"] > 0.5  # a visible whole-image blend at 10% is learned in two epochs
    assert 0 <= rows["ubw-p"]["dispersibility"] <= 1
    assert rows["blended"]["linf"] <= 0.2 + 1e-6
    poison = json.loads((tmp_path / "run" / "victims" / "wanet-r0.1" / "poison.json").read_text())
    assert len(poison["cover_indices"]) == 2 * poison["num_poisoned"]
