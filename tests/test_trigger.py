"""Triggers: application, exact budgets (float and 8-bit), save/load, rendering."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siba.attacks import BlendTrigger, AdditiveTrigger, load_trigger, random_mask
from siba.errors import SibaError
from siba.metrics import l0_pixels, linf


def random_trigger(k: int, eps: float, seed: int, shape=(3, 8, 8)) -> AdditiveTrigger:
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(shape[1:], k, g)
    delta = (torch.rand(shape, generator=g) * 2 - 1) * eps * 1.5  # some values beyond ε, clipped below
    delta = delta.clamp(-eps, eps)
    return AdditiveTrigger(delta, mask, eps=eps, k=k, num_classes=4)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 64), levels=st.floats(0.5, 40), seed=st.integers(0, 10_000))
def test_budgets_hold_in_float_and_8bit(k, levels, seed):
    eps = levels / 255
    trig = random_trigger(k, eps, seed)
    g = torch.Generator().manual_seed(seed + 1)
    xu = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    xu[:4] = 0  # saturated images exercise the clipping
    xu[4:8] = 255
    x = xu.float() / 255
    xp = trig.apply(x)
    assert int(l0_pixels(x, xp, tol=0).max()) <= k
    assert float(linf(x, xp).max()) <= eps + 1e-7
    xq = trig.apply_uint8(xu)
    assert xq.dtype == torch.uint8
    changed = (xq != xu).any(1).flatten(1).sum(1)
    assert int(changed.max()) <= k
    assert int((xq.int() - xu.int()).abs().max()) <= math.floor(255 * eps + 1e-5)
    # untouched pixels are untouched, bit for bit
    outside = trig.mask == 0
    assert torch.equal(xq[:, :, outside], xu[:, :, outside])


def test_8bit_trigger_keeps_whole_levels():
    mask = torch.zeros(4, 4)
    mask[0, 0] = 1
    delta = torch.zeros(3, 4, 4)
    delta[:, 0, 0] = torch.tensor([8 / 255, -8 / 255, 3.7 / 255])
    trig = AdditiveTrigger(delta, mask, eps=8 / 255, k=1, num_classes=2)
    x = torch.full((1, 3, 4, 4), 100, dtype=torch.uint8)
    q = trig.apply_uint8(x)
    # ±8 levels survive exactly (no float round-off to 7 or 9); 3.7 truncates towards zero
    assert q[0, :, 0, 0].tolist() == [108, 92, 103]
    assert torch.equal(q[0, :, 1:, :], x[0, :, 1:, :])


def test_trigger_rejects_over_budget():
    mask = torch.ones(4, 4)
    with pytest.raises(SibaError, match="more than k"):
        AdditiveTrigger(torch.zeros(3, 4, 4), mask, eps=0.1, k=3, num_classes=2)
    with pytest.raises(SibaError, match="above"):
        AdditiveTrigger(torch.full((3, 4, 4), 0.2), mask, eps=0.1, k=16, num_classes=2)
    with pytest.raises(SibaError, match="target class"):
        AdditiveTrigger(torch.zeros(3, 4, 4), mask, eps=0.1, k=16, num_classes=2, target=2)


def test_targets_all_to_one_and_all_to_all():
    y = torch.tensor([0, 1, 2, 3])
    t1 = AdditiveTrigger(torch.zeros(3, 4, 4), torch.zeros(4, 4), eps=0.1, k=1, num_classes=4, target=2)
    assert t1.targets(y).tolist() == [2, 2, 2, 2]
    assert t1.rule.eligible(y).tolist() == [True, True, False, True]
    t2 = AdditiveTrigger(torch.zeros(3, 4, 4), torch.zeros(4, 4), eps=0.1, k=1, num_classes=4, target_rule="all-to-all")
    assert t2.targets(y).tolist() == [1, 2, 3, 0]
    assert t2.rule.eligible(y).all()


def test_save_load_roundtrip(tmp_path):
    trig = random_trigger(10, 8 / 255, 3)
    trig.meta["attack"] = "siba"
    path = trig.save(tmp_path / "t")
    assert path.name == "t.safetensors" and (tmp_path / "t.json").is_file()
    back = load_trigger(tmp_path / "t.safetensors")
    assert isinstance(back, AdditiveTrigger)
    assert torch.equal(back.delta, trig.delta) and torch.equal(back.mask, trig.mask)
    assert back.eps == trig.eps and back.k == 10 and back.meta["attack"] == "siba"
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(back.apply(x), trig.apply(x))


def test_blend_trigger_roundtrip_and_render(tmp_path):
    pattern = torch.rand(3, 8, 8)
    alpha = torch.zeros(8, 8)
    alpha[-2:, -2:] = 1
    trig = BlendTrigger(pattern, alpha, num_classes=3, target=1)
    x = torch.rand(2, 3, 8, 8)
    out = trig.apply(x)
    assert torch.allclose(out[:, :, -2:, -2:], pattern[:, -2:, -2:].expand(2, -1, -1, -1))
    assert torch.equal(out[:, :, :-2, :], x[:, :, :-2, :])
    trig.save(tmp_path / "b")
    back = load_trigger(tmp_path / "b")
    assert isinstance(back, BlendTrigger) and back.target == 1
    png = back.render(tmp_path / "b.png", (x * 255).to(torch.uint8))
    from PIL import Image

    with Image.open(png) as im:
        assert im.width > 8 * 4 and im.height > 8 * 4


def test_load_trigger_errors(tmp_path):
    with pytest.raises(SibaError, match="not found"):
        load_trigger(tmp_path / "missing")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SibaError):
        load_trigger(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("drop", ["num_classes", "target", "target_rule"])
def test_load_trigger_missing_description_key(tmp_path, drop):
    from siba.runtime import load_tensors, save_tensors

    path = random_trigger(4, 0.03, 0).save(tmp_path / "t")
    tensors, meta = load_tensors(path)
    desc = meta["siba_trigger"]
    del desc[drop]
    save_tensors(path, tensors, {"siba_trigger": desc})
    with pytest.raises(SibaError) as exc:
        load_trigger(path)
    assert str(exc.value) == f"{path} is an incomplete siba trigger: it has no {drop!r}"


def test_load_trigger_missing_tensor(tmp_path):
    from siba.runtime import load_tensors, save_tensors

    pattern, alpha = torch.rand(3, 8, 8), torch.ones(8, 8)
    path = BlendTrigger(pattern, alpha, num_classes=4).save(tmp_path / "b")
    tensors, meta = load_tensors(path)
    save_tensors(path, {"pattern": tensors["pattern"]}, meta)
    with pytest.raises(SibaError, match="incomplete siba trigger: it has no 'alpha'"):
        load_trigger(tmp_path / "b.json")


def test_check_fits():
    trig = random_trigger(4, 0.03, 0)
    trig.check_fits((3, 8, 8), 4)
    with pytest.raises(SibaError, match="8×8"):
        trig.check_fits((3, 16, 16), 4)
    with pytest.raises(SibaError, match="classes"):
        trig.check_fits((3, 8, 8), 10)
