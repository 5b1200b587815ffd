"""ISSBA: the encoder trigger, the encoder/decoder training, its checkpoints, the attack's options."""

from __future__ import annotations

import pytest
import torch

from siba.attacks.base import create_attack
from siba.attacks.issba import (APPLY_CHUNK, ISSBA, EncoderTrigger, StegaDecoder, StegaEncoder, encode,
                                evaluate_issba, fixed_secret, image_loss_weight, train_issba)
from siba.attacks.trigger import Trigger
from siba.errors import SibaError
from siba.runtime import load_tensors

from .conftest import make_set


def _random_trigger(bits: int = 6, size: int = 16, base: int = 4, gain: float = 1.0, seed: int = 0) -> EncoderTrigger:
    """A trigger around an untrained (seeded) encoder; ``gain`` scales its residual so that clipping happens."""
    torch.manual_seed(seed)
    net = StegaEncoder(bits, size, size, 3, base)
    with torch.no_grad():
        net.residual.weight.mul_(gain)
        net.residual.bias.mul_(gain)
    return EncoderTrigger(net.state_dict(), fixed_secret(bits, seed), arch=net.arch(), num_classes=4, target=1)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, f"not a one-line message: {text!r}"
    return text


# --------------------------------------------------------------------------- the trigger


def test_poisoned_image_is_exactly_the_clipped_sum_of_image_and_residual():
    mark = _random_trigger(gain=40.0)
    x = make_set(24, size=16, seed=5).images.float() / 255
    out = mark.apply(x)
    net = StegaEncoder(6, 16, 16, 3, 4)
    net.load_state_dict(mark.weights)
    with torch.no_grad():
        residual = net(x, fixed_secret(6, 0))
    assert torch.equal(out, (x + residual).clamp(0, 1))
    assert torch.equal(out, encode(net.eval(), x, mark.secret))
    # the clip is part of it: some sums leave [0, 1], and the residual is image-specific (sample-specific trigger)
    assert bool(((x + residual) > 1).any() or ((x + residual) < 0).any())
    assert (residual[0] - residual[1]).abs().max() > 1e-3
    # 8-bit application is the float one rounded; the input batch is untouched and nothing needs a gradient
    assert torch.equal(mark.apply_uint8((x * 255).round().to(torch.uint8)),
                       (mark.apply((x * 255).round() / 255) * 255).round().to(torch.uint8))
    assert not out.requires_grad


def test_large_batches_are_applied_in_chunks_with_the_same_result_per_image():
    mark = _random_trigger(gain=5.0)
    x = torch.rand(APPLY_CHUNK + 9, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = mark.apply(x)
    assert whole.shape == x.shape
    assert torch.allclose(whole[-9:], mark.apply(x[-9:]), atol=1e-6)
    with pytest.raises(SibaError) as err:
        mark.apply(torch.rand(2, 3, 20, 20))
    assert "16×16" in _one_line(err)


def test_save_load_round_trip_is_bit_for_bit(tmp_path):
    mark = _random_trigger(gain=10.0)
    mark.meta["heldout"] = {"bit_accuracy": 0.99}
    st = mark.save(tmp_path / "trigger")
    back = Trigger.load(st)
    assert isinstance(back, EncoderTrigger) and back.kind == "encoder"
    assert back.arch == mark.arch and torch.equal(back.secret, mark.secret)
    assert back.target == 1 and back.num_classes == 4 and back.meta["heldout"] == {"bit_accuracy": 0.99}
    assert back.fingerprint() == mark.fingerprint()
    x = torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(back.apply(x), mark.apply(x))
    tensors, meta = load_tensors(st)
    assert meta["siba_trigger"]["kind"] == "encoder" and "secret" in tensors
    assert meta["siba_trigger"]["secret_bits"] == "".join(str(int(b)) for b in mark.secret.tolist())
    png = mark.render(tmp_path / "trigger.png", make_set(2, size=16).images)
    assert png.stat().st_size > 0
    # another secret is another trigger
    other = EncoderTrigger(mark.weights, 1 - mark.secret, arch=mark.arch, num_classes=4, target=1)
    assert other.fingerprint() != mark.fingerprint() and not torch.equal(other.apply(x), mark.apply(x))


def test_encoder_trigger_refuses_weights_or_secrets_that_do_not_fit():
    mark = _random_trigger()
    with pytest.raises(SibaError) as err:
        EncoderTrigger(mark.weights, torch.ones(5), arch=mark.arch, num_classes=4)
    assert "6 bits" in _one_line(err)
    with pytest.raises(SibaError) as err:
        EncoderTrigger(mark.weights, mark.secret, arch={**mark.arch, "base": 8}, num_classes=4)
    assert "do not fit" in _one_line(err)


def test_fixed_secret_is_seeded():
    assert torch.equal(fixed_secret(20, 3), fixed_secret(20, 3))
    assert not torch.equal(fixed_secret(20, 3), fixed_secret(20, 4))
    assert set(fixed_secret(64, 0).tolist()) == {0.0, 1.0}


def test_image_loss_schedule_warms_up_then_ramps():
    assert [image_loss_weight(s, 100, 0.1, 0.4) for s in (0, 9, 10, 29, 49, 99)] == [0.0, 0.0, 1 / 40, 0.5, 1.0, 1.0]
    assert image_loss_weight(0, 10, 0.0, 0.0) == 1.0


# --------------------------------------------------------------------------- training


def test_a_quickly_trained_tiny_pair_reads_the_secret_back_from_held_out_images():
    """6 bits, 16×16 synthetic images, 160 steps: the decoder reads every bit of the attack's secret
    from images it was not trained on (threshold 95%; chance is 50%)."""
    data = make_set(160, size=16, seed=3)
    res = train_issba(data.images[:128], bits=6, steps=160, batch_size=16, base=8, lr=1e-3, warmup=0.7, ramp=0.2,
                      l2_weight=0.05, seed=0, progress=False, checkpoint_every=40)
    assert [row["step"] for row in res.history] == [40, 80, 120, 160]
    assert res.history[0]["bit_accuracy"] < 0.75 < res.history[-1]["bit_accuracy"]
    assert not res.lpips_loss  # 16×16 is below LPIPS's 31×31
    stats = evaluate_issba(res.encoder, res.decoder, data.images[128:], fixed_secret(6, 0))
    assert stats["bit_accuracy"] >= 0.95 and stats["bit_accuracy_8bit"] >= 0.95
    assert stats["bit_accuracy_random"] >= 0.9
    assert stats["images"] == 32 and stats["lpips"] is None and stats["psnr"] > 0


def test_training_resumes_bit_identically_after_an_interruption(tmp_path, monkeypatch):
    import siba.attacks.issba as issba

    data = make_set(40, size=16, seed=1)
    kw = dict(bits=4, steps=30, batch_size=4, base=4, seed=2, progress=False, checkpoint_every=10)
    whole = train_issba(data.images, **kw)
    ckpt = tmp_path / "issba.ckpt.safetensors"
    real_save = issba._save_checkpoint

    def save_then_die(path, next_step, *args, **kwargs):
        real_save(path, next_step, *args, **kwargs)
        if next_step == 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(issba, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_issba(data.images, checkpoint=ckpt, **kw)
    monkeypatch.setattr(issba, "_save_checkpoint", real_save)
    notes: list[str] = []
    resumed = train_issba(data.images, checkpoint=ckpt, log=notes.append, **kw)
    assert resumed.resumed_at == 20 and any("resuming" in n for n in notes)
    for a, b in ((whole.encoder, resumed.encoder), (whole.decoder, resumed.decoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [r["secret_loss"] for r in resumed.history] == [r["secret_loss"] for r in whole.history]
    # the global random generator is not touched by the training's seeding
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    train_issba(data.images, **{**kw, "steps": 2})
    assert torch.equal(torch.rand(3), expected)


def test_a_checkpoint_of_other_settings_is_refused_in_one_line(tmp_path):
    data = make_set(20, size=16, seed=1)
    ckpt = tmp_path / "c.safetensors"
    kw = dict(bits=4, steps=4, batch_size=4, base=4, progress=False, checkpoint_every=2, checkpoint=ckpt)
    train_issba(data.images, lr=1e-3, **kw)
    assert ckpt.is_file()
    with pytest.raises(SibaError) as err:
        train_issba(data.images, lr=2e-3, **kw)
    assert "lr=0.001" in _one_line(err) and "lr=0.002" in str(err.value)
    with pytest.raises(SibaError) as err:
        train_issba(make_set(20, size=16, seed=2).images, lr=1e-3, **kw)
    assert "other images" in _one_line(err)
    _random_trigger().save(tmp_path / "not-a-checkpoint")
    with pytest.raises(SibaError) as err:
        train_issba(data.images, lr=1e-3, **{**kw, "checkpoint": tmp_path / "not-a-checkpoint.safetensors"})
    assert "not an ISSBA training checkpoint" in _one_line(err)


def test_without_lpips_weights_training_uses_the_l2_loss_and_says_so(monkeypatch):
    import siba.metrics.lpips as lpips

    def missing(*args, **kwargs):
        raise SibaError("LPIPS weights not found")

    monkeypatch.setattr(lpips, "default_lpips", missing)
    data = make_set(12, size=32, seed=4)
    notes: list[str] = []
    res = train_issba(data.images[:8], bits=4, steps=3, batch_size=4, base=4, progress=False, log=notes.append)
    assert not res.lpips_loss and any("L2 image loss only" in n for n in notes)
    assert evaluate_issba(res.encoder, res.decoder, data.images[8:], fixed_secret(4, 0))["lpips"] is None


# --------------------------------------------------------------------------- the attack


@pytest.mark.parametrize("options, words", [
    ({"bits": 0}, "bits"), ({"bits": True}, "bits"), ({"bits": "20"}, "bits"), ({"bits": 2.5}, "bits"),
    ({"steps": -1}, "steps"), ({"steps": 0}, "steps"), ({"steps": 10.0}, "steps"), ({"batch_size": 0}, "batch_size"),
    ({"lr": 0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": "fast"}, "lr"), ({"max_images": 0}, "max_images"),
    ({"holdout": 0}, "holdout"), ({"l2_weight": -1}, "l2_weight"), ({"lpips_weight": "x"}, "lpips_weight"),
    ({"warmup": 1.5}, "warmup"), ({"warmup": 0.8, "ramp": 0.4}, "warmup + ramp"), ({"base": 2}, "base"),
    ({"target": -1}, "target"), ({"all_to_all": "yes"}, "all_to_all"), ({"seed": -1}, "seed"),
    ({"epochs": 3}, "unknown option"),
])
def test_bad_options_are_one_line_errors(options, words):
    with pytest.raises(SibaError) as err:
        create_attack("issba", **options)
    assert words in _one_line(err)


def test_bad_data_is_a_one_line_error_before_training():
    attack = create_attack("issba", steps=1, holdout=8)
    with pytest.raises(SibaError) as err:
        attack.generate(make_set(20, size=8))
    assert "16×16" in _one_line(err)
    with pytest.raises(SibaError) as err:
        attack.generate(make_set(8, size=16))
    assert "holdout" in _one_line(err)
    with pytest.raises(SibaError) as err:
        create_attack("issba", target=9).generate(make_set(20, size=16))
    assert "target class 9" in _one_line(err)


def test_end_to_end_on_a_slice_of_cifar10_mini(tmp_path):
    from siba.data import load_dataset
    from siba.metrics.lpips import lpips_available
    from siba.poisoning import poison_dataset

    data = load_dataset("cifar10-mini")
    train = data.train.subset(range(120))
    attack = create_attack("issba", bits=8, steps=12, batch_size=8, max_images=80, holdout=24, base=4, target=2,
                           seed=5)
    assert isinstance(attack, ISSBA) and not attack.needs_surrogate
    held, used = attack.split(train)
    assert len(held) == 24 and len(used) == 80 and not set(held.tolist()) & set(used.tolist())
    notes: list[str] = []
    ckpt = tmp_path / "issba.ckpt.safetensors"
    mark = attack.generate(train, progress=False, log=notes.append, checkpoint=ckpt)
    assert isinstance(mark, EncoderTrigger) and mark.shape == (3, 32, 32) and mark.target == 2
    assert torch.equal(mark.secret, fixed_secret(8, 5))
    meta = mark.meta
    assert meta["attack"] == "issba" and meta["params"]["bits"] == 8 and meta["train_images"] == 80
    assert meta["heldout"]["images"] == 24 and 0 <= meta["heldout"]["bit_accuracy"] <= 1
    assert meta["heldout"]["psnr"] > 0 and meta["wall_s"] >= meta["train_wall_s"] > 0
    assert meta["lpips_loss"] == lpips_available()
    assert (meta["heldout"]["lpips"] is not None) == lpips_available()
    assert [row["step"] for row in meta["history"]] == [12]
    assert any("held-out" in n for n in notes)
    # the checkpoint holds the finished training: generating again continues from it to the same trigger
    again = attack.generate(train, progress=False, checkpoint=ckpt)
    assert again.fingerprint() == mark.fingerprint()
    # poisoning attaches the sample-specific change to the chosen images only, in 8 bits
    poisoned = poison_dataset(train, mark, rate=0.1, seed=0)
    idx = poisoned.indices
    assert len(idx) == 12 and bool((poisoned.data.labels[idx] == 2).all())
    clean = torch.ones(len(train), dtype=torch.bool)
    clean[idx] = False
    assert torch.equal(poisoned.data.images[clean], train.images[clean])
    assert torch.equal(poisoned.data.images[idx], mark.apply_uint8(train.images[idx]))
    change = poisoned.data.images[idx].float() - train.images[idx].float()
    assert change.abs().sum() > 0 and not torch.equal(change[0], change[1])
    path = mark.save(tmp_path / "trigger")
    assert torch.equal(Trigger.load(path).apply_uint8(train.images[:4]), mark.apply_uint8(train.images[:4]))


def test_decoder_reads_logits_per_bit_for_any_size():
    dec = StegaDecoder(5, 3, 4)
    assert dec(torch.rand(2, 3, 16, 16)).shape == (2, 5)
    assert dec(torch.rand(2, 3, 23, 40)).shape == (2, 5)
    enc = StegaEncoder(5, 23, 40, 3, 4)
    assert enc(torch.rand(2, 3, 23, 40), torch.ones(5)).shape == (2, 3, 23, 40)
