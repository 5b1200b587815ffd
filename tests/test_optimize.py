"""The SIBA optimisation: Lemma 1, exact budgets, TUAP/SIBA success on a trained surrogate."""

from __future__ import annotations

import copy
import itertools
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from torch import nn

from siba.attacks import AdditiveTrigger, create_attack, l0_project, l0_support, optimize_trigger, topk_mask
from siba.data import ImageSet
from siba.data.loader import DeviceLoader
from siba.errors import SibaError
from siba.models import create_model
from siba.runtime import load_tensors, save_tensors
from siba.training import TrainConfig, train


def colour_set(n: int, seed: int, size: int = 8) -> ImageSet:
    """4 classes: red-, green-, blue-tinted or grey noise images (a task a TUAP can exploit)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = torch.rand(n, 3, size, size, generator=g) * 0.5 + 0.1
    for c in range(3):
        x[labels == c, c] += 0.3
    return ImageSet((x.clamp(0, 1) * 255).round().to(torch.uint8), labels, ["red", "green", "blue", "grey"])


def brute_force_projection_cost(v: torch.Tensor, k: int) -> float:
    """min over pixel sets S with |S| ≤ k of ||v − v|_S||² (exhaustive)."""
    energy = v.pow(2).sum(0).flatten().tolist()
    best = math.inf
    for r in range(0, k + 1):
        for keep in itertools.combinations(range(len(energy)), r):
            best = min(best, sum(e for i, e in enumerate(energy) if i not in keep))
    return best


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), c=st.integers(1, 3))
def test_lemma1_projection_matches_brute_force(seed, k, c):
    v = torch.randn(c, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = l0_project(v, k)
    kept = (u != 0).any(0)
    assert int(kept.sum()) <= k
    # kept pixels are copied exactly, the rest zeroed
    assert torch.equal(u[:, kept], v[:, kept])
    assert float((u - v).pow(2).sum()) == pytest.approx(brute_force_projection_cost(v, k), abs=1e-12)



@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), c=st.integers(1, 3))
def test_lemma1_projection_with_ties_is_exact_and_breaks_ties_by_the_given_order(seed, k, c):
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(-1, 2, (c, 2, 3), generator=g).double()  # values in {-1, 0, 1}: many equal energies
    tie_break = torch.rand(2, 3, generator=g)
    u = l0_project(v, k, tie_break)
    mask = l0_support(v, k, tie_break).bool()
    assert int(mask.sum()) == k and torch.equal(u, v * mask)
    assert float((u - v).pow(2).sum()) == pytest.approx(brute_force_projection_cost(v, k), abs=1e-12)
    energy = v.pow(2).sum(0)
    for i in mask.nonzero().tolist():  # every kept pixel beats every dropped one, on energy then on the order
        for j in (~mask).nonzero().tolist():
            assert (energy[i[0], i[1]], tie_break[i[0], i[1]]) > (energy[j[0], j[1]], tie_break[j[0], j[1]])

def test_topk_mask_counts():
    scores = torch.arange(12.0).view(3, 4)
    m = topk_mask(scores, 5)
    assert int(m.sum()) == 5 and m.view(-1)[-5:].eq(1).all()
    assert int(topk_mask(scores, 100).sum()) == 12


@pytest.fixture(scope="module")
def surrogate():
    """A small fastnet trained on synthetic 8×8 data (class = colour tint)."""
    torch.manual_seed(0)
    data = colour_set(512, seed=0)
    model = create_model("fastnet", 4, widths=(8, 16, 16, 32))
    cfg = TrainConfig(epochs=12, batch_size=64, lr=0.2, schedule="onecycle", crop_pad=0, flip=False,
                      precision="fp32", eval_every=0)
    train(model, data, None, cfg, device="cpu", progress=False, log=lambda s: None)
    return model.eval(), data


def test_surrogate_learned(surrogate):
    from siba.training import accuracy

    model, _ = surrogate
    assert accuracy(model, colour_set(256, seed=5), device="cpu") > 0.8


@settings(max_examples=12, deadline=None)
@given(k=st.integers(1, 64), levels=st.integers(1, 32), rule=st.sampled_from(["gradient", "projection"]),
       all_to_all=st.booleans())
def test_budgets_exact_after_optimisation(surrogate, k, levels, rule, all_to_all):
    model, data = surrogate
    eps = levels / 255
    res = optimize_trigger(model, data.images[:128], data.labels[:128], k=k, eps=eps, alpha=0.8 * eps, beta=10,
                           passes=3, remask_every=1, batch_size=64, num_classes=4, all_to_all=all_to_all,
                           mask_rule=rule, progress=False)
    assert int(res.mask.sum()) == k
    assert float(res.delta.abs().max()) <= eps
    assert torch.equal(res.delta * (1 - res.mask), torch.zeros_like(res.delta))
    trig = AdditiveTrigger(res.delta, res.mask, eps=eps, k=k, num_classes=4)
    xq = trig.apply_uint8(data.images[:64])
    assert int((xq != data.images[:64]).any(1).flatten(1).sum(1).max()) <= k
    assert int((xq.int() - data.images[:64].int()).abs().max()) <= levels



def test_projection_rule_starts_from_the_most_salient_pixels(surrogate):
    """From δ = 0 every pixel of the step −α·sign(g) has the same energy: the optimiser's Lemma-1
    selection (l0_support, the function tested against brute force above) then keeps the pixels the
    gradient rule keeps, not the first k in memory."""
    model, data = surrogate
    masks = {rule: optimize_trigger(model, data.images[:128], data.labels[:128], k=6, eps=0.1, alpha=0.08, beta=10,
                                    passes=1, remask_every=1, batch_size=128, num_classes=4, mask_rule=rule,
                                    precision="fp32", progress=False).mask for rule in ("gradient", "projection")}
    assert int(masks["projection"].sum()) == 6
    assert torch.equal(masks["projection"], masks["gradient"])
    assert not torch.equal(masks["projection"], topk_mask(torch.zeros(8, 8), 6))

def test_tuap_targeted_success_far_above_chance(surrogate):
    model, data = surrogate
    attack = create_attack("tuap", eps=0.25, passes=8, batch_size=64, target=0)
    trig = attack.generate(data, model, progress=False)
    assert trig.k == 64 and trig.meta["attack"] == "tuap"
    test = colour_set(256, seed=7)
    sel = test.labels != 0
    with torch.no_grad():
        pred = model(trig.apply(test.images[sel].float() / 255)).argmax(1)
    success = (pred == 0).float().mean().item()
    assert success > 0.8, success  # chance is 1/4


def test_siba_beats_random_on_surrogate(surrogate):
    model, data = surrogate
    test = colour_set(256, seed=9)
    sel = test.labels != 0

    def success(trig):
        with torch.no_grad():
            return (model(trig.apply(test.images[sel].float() / 255)).argmax(1) == 0).float().mean().item()

    siba = create_attack("siba", k=16, eps=0.3, passes=10, remask_every=2, batch_size=64).generate(data, model,
                                                                                               progress=False)
    rnd = create_attack("random", k=16, eps=0.3).generate(data, model)
    assert int(siba.mask.sum()) == 16 and siba.meta["best_pass"] >= 1
    assert success(siba) > success(rnd) + 0.2


def test_sparse_keeps_its_random_mask(surrogate):
    model, data = surrogate
    a = create_attack("sparse", k=10, eps=0.1, passes=4, remask_every=1, batch_size=64, seed=3)
    t1 = a.generate(data, model, progress=False)
    t2 = create_attack("random", k=10, eps=0.1, seed=3).generate(data, model)
    assert torch.equal(t1.mask, t2.mask)  # same seeded mask, never re-selected


def test_history_and_lowest_loss_pass(surrogate):
    model, data = surrogate
    res = optimize_trigger(model, data.images, data.labels, k=8, eps=0.2, alpha=0.16, beta=10, passes=5,
                           remask_every=2, batch_size=128, num_classes=4, progress=False)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 5
    assert res.best_loss == min(losses) and losses[res.best_pass - 1] == res.best_loss


@pytest.mark.parametrize("params, message", [
    ({"k": 0}, "k must be"),
    ({"k": 65}, "more than"),
    ({"eps": 0}, "eps must be in"),
    ({"eps": 1.5}, "eps must be in"),
    ({"eps": "abc"}, "eps must be a number"),
    ({"target": 9}, "target class 9"),
    ({"mask_rule": "magic"}, "mask rule"),
    ({"passes": 0}, "passes"),
    ({"bogus": 1}, "unknown option"),
])
def test_bad_settings_are_one_line_errors(surrogate, params, message):
    model, data = surrogate
    with pytest.raises(SibaError, match=message):
        create_attack("siba", **params).generate(data, model, progress=False)


def test_surrogate_of_other_class_count(surrogate):
    _, data = surrogate
    other = create_model("fastnet", 7, widths=(8, 8, 8, 8))
    with pytest.raises(SibaError, match="surrogate has 7 classes"):
        create_attack("siba", k=4).generate(data, other, progress=False)
    with pytest.raises(SibaError, match="needs a surrogate"):
        create_attack("siba", k=4).generate(data, None, progress=False)


# --------------------------------------------------------------------------- the best pass and the mask rule


def _state(path) -> dict[str, torch.Tensor]:
    """The current (not the best) δ and mask an optimisation checkpoint holds."""
    return load_tensors(path)[0]


def test_the_best_pass_is_returned_not_the_last(surrogate, tmp_path):
    """A step far beyond ε (α = 100ε: each batch sets δ to ±ε) makes a later pass worse than pass 5."""
    model, data = surrogate
    kw = dict(k=64, eps=0.1, alpha=10.0, beta=10, remask_every=1, batch_size=128, num_classes=4, precision="fp32",
              progress=False)
    full = optimize_trigger(model, data.images, data.labels, passes=6, checkpoint=tmp_path / "full.safetensors", **kw)
    losses = [h["loss"] for h in full.history]
    assert full.best_pass < 6 and losses[-1] > full.best_loss  # measured: the best is pass 5 of 6
    last = _state(tmp_path / "full.safetensors")  # δ and m after the last pass
    upto = optimize_trigger(model, data.images, data.labels, passes=full.best_pass,
                            checkpoint=tmp_path / "upto.safetensors", **kw)
    at_best = _state(tmp_path / "upto.safetensors")  # δ and m after the best pass
    assert upto.history == full.history[:full.best_pass]
    assert torch.equal(full.delta, at_best["delta"]) and torch.equal(full.mask, at_best["mask"])
    assert not torch.equal(full.delta, last["delta"])  # returning the last pass would fail the line above


def _first_batch_gradient(model, images, labels, *, seed, p, batch_size, pert, target=0, beta=10.0):
    """∂ mean(min(CE(f(clip(x + pert)), target), β)) / ∂pert on the first batch of pass ``p``."""
    loader = DeviceLoader(images, labels, batch_size, shuffle=True, seed=seed, channels_last=True)
    loader.set_epoch(p)
    x, _ = next(iter(loader))
    pert = pert.clone().requires_grad_(True)
    ce = F.cross_entropy(model((x + pert).clamp(0, 1)).float(), torch.full((x.shape[0],), target),
                         reduction="none").clamp(max=beta)
    (g,) = torch.autograd.grad(ce.mean(), pert)
    return g


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    order = scores.flatten().argsort(descending=True)
    assert scores.flatten()[order[k - 1]] > scores.flatten()[order[k]]  # no tie at the boundary
    out = torch.zeros(scores.numel())
    out[order[:k]] = 1
    return out.view_as(scores)


def test_the_gradient_rule_reselects_the_top_k_of_the_first_batch_every_T_passes(surrogate, tmp_path, monkeypatch):
    from siba.attacks import optimize as optimize_module

    model, data = surrogate
    images, labels = data.images[:256], data.labels[:256]
    kw = dict(k=6, eps=0.1, alpha=0.08, beta=10, remask_every=3, batch_size=64, num_classes=4, seed=3,
              precision="fp32", progress=False)
    # pass 1 selects the top-k of Σ_c|g_c| at δ = 0 on its first batch
    first = optimize_trigger(model, images, labels, passes=1, **kw)
    g0 = _first_batch_gradient(model, images, labels, seed=3, p=0, batch_size=64, pert=torch.zeros(3, 8, 8))
    assert torch.equal(first.mask, _top_k(g0.abs().sum(0), 6))
    # pass 4 (index 3) re-selects from its first batch's gradient at the δ and m that pass 3 left
    optimize_trigger(model, images, labels, passes=3, checkpoint=tmp_path / "three.safetensors", **kw)
    after3 = _state(tmp_path / "three.safetensors")
    g3 = _first_batch_gradient(model, images, labels, seed=3, p=3, batch_size=64,
                               pert=after3["mask"] * after3["delta"])
    optimize_trigger(model, images, labels, passes=4, checkpoint=tmp_path / "four.safetensors", **kw)
    assert torch.equal(_state(tmp_path / "four.safetensors")["mask"], _top_k(g3.abs().sum(0), 6))
    assert not torch.equal(after3["mask"], _top_k(g3.abs().sum(0), 6))  # the re-selection changed the mask
    # the mask is selected at passes 1, 4 and 7 (p % 3 == 0), once each, on the first of the 4 batches
    events: list[str] = []
    real = optimize_module.topk_mask

    def spy(scores, k):
        events.append("select")
        return real(scores, k)

    monkeypatch.setattr(optimize_module, "topk_mask", spy)
    optimize_trigger(model, images, labels, passes=7, log=lambda s: events.append(s.split()[1]), **kw)
    assert events == ["select", "1/7", "2/7", "3/7", "select", "4/7", "5/7", "6/7", "select", "7/7"]


# --------------------------------------------------------------------------- numerical failure, success rate


def _nan_copy(model):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float("nan"))
    return broken


class _NanAfter(nn.Module):
    """The surrogate until its ``calls``-th forward pass; NaN logits from then on."""

    def __init__(self, model: nn.Module, calls: int) -> None:
        super().__init__()
        self.model, self.calls, self.seen = model, calls, 0

    def forward(self, x):
        self.seen += 1
        out = self.model(x)
        return out * float("nan") if self.seen >= self.calls else out


def test_a_nan_surrogate_is_an_error_not_an_empty_trigger(surrogate, tmp_path):
    model, data = surrogate
    kw = dict(k=8, eps=0.1, alpha=0.08, beta=10, remask_every=1, batch_size=128, num_classes=4, progress=False)
    with pytest.raises(SibaError, match=r"^trigger optimisation failed at pass 1: the surrogate's loss is nan "):
        optimize_trigger(_nan_copy(model), data.images, data.labels, passes=3, **kw)
    # NaN logits from the 9th forward pass: the first batch of pass 3 (4 batches a pass)
    ckpt = tmp_path / "ck.safetensors"
    with pytest.raises(SibaError) as exc:
        optimize_trigger(_NanAfter(model, 9), data.images, data.labels, passes=5, checkpoint=ckpt, **kw)
    assert str(exc.value) == ("trigger optimisation failed at pass 3: the surrogate's loss is nan (are its weights "
                              "finite? in bf16, try precision fp32); no trigger was made")
    state = load_tensors(ckpt)[1]["siba_optimize_checkpoint"]
    assert state["next_pass"] == 2  # passes 1 and 2 were kept; nothing of pass 3
    # through the attack: an error, no trigger, no checkpoint
    ckpt2 = tmp_path / "attack.safetensors"
    with pytest.raises(SibaError, match="failed at pass 1"):
        create_attack("siba", k=8, passes=2).generate(data, _nan_copy(model), progress=False, checkpoint=ckpt2)
    assert not ckpt2.exists()


def test_siba_optimize_with_a_nan_surrogate_writes_no_trigger(tmp_path, capsys):
    from siba.models import save_model

    from .test_cli import expect_user_error, make_data

    data = make_data(tmp_path / "data", train=4, test=1)
    torch.manual_seed(0)
    save_model(_nan_copy(create_model("fastnet", 3, widths=(8, 8, 8, 8))), tmp_path / "nan.safetensors")
    out = tmp_path / "trig"
    expect_user_error(capsys, ["optimize", "--data", str(data), "--surrogate", str(tmp_path / "nan.safetensors"),
                               "--out", str(out), "--k", "4", "--passes", "2", "--batch-size", "4",
                               "--device", "cpu", "--quiet"],
                      "trigger optimisation failed at pass 1: the surrogate's loss is nan")
    assert not out.exists()  # no trigger, no picture, no checkpoint


class _ByMeanLevel(nn.Module):
    """Reads the class from an image's mean level (class c: level (c + 1)/5) and predicts ``route[c]``."""

    def __init__(self, route: list[int]) -> None:
        super().__init__()
        self.register_buffer("route", torch.eye(4)[route])

    def forward(self, x):
        level = x.mean((1, 2, 3))
        near = torch.softmax(-1e4 * (level[:, None] - torch.arange(1, 5) / 5) ** 2, 1)  # ≈ one-hot of the class
        return torch.log(near @ self.route + 1e-12)


def test_surrogate_success_leaves_out_images_of_the_target_class():
    labels = torch.arange(64) % 4
    images = ((labels.float() + 1) / 5 * 255).round().to(torch.uint8)[:, None, None, None].expand(64, 3, 8, 8)
    # classes 0, 1 and 3 go to class 0, class 2 stays
    model = _ByMeanLevel([0, 0, 2, 0])
    kw = dict(k=1, eps=1 / 255, alpha=1 / 255, beta=10, passes=2, remask_every=1, batch_size=16, num_classes=4,
              precision="fp32", progress=False)
    one = optimize_trigger(model, images, labels, target=0, **kw)
    # all-to-one towards 0: classes 1 and 3 of the 48 images not of class 0 (counting class 0 would give 48/64)
    assert [h["surrogate_success"] for h in one.history] == [32 / 48] * 2
    # all-to-all (y → y+1): only class 3 → 0 succeeds, counted over all 64 images
    every = optimize_trigger(model, images, labels, all_to_all=True, **kw)
    assert [h["surrogate_success"] for h in every.history] == [16 / 64] * 2
    only_target = optimize_trigger(model, images[labels == 0], labels[labels == 0], target=0, **kw)
    assert [h["surrogate_success"] for h in only_target.history] == [None] * 2  # no image can count


# --------------------------------------------------------------------------- checkpoints


class _Stop(Exception):
    pass


def _stop_after(n: int, seen: list[str] | None = None):
    def log(line: str) -> None:
        if seen is not None:
            seen.append(line)
        if line.startswith(f"pass {n}/"):
            raise _Stop
    return log


@pytest.mark.parametrize("rule, all_to_all", [("gradient", False), ("projection", True)])
def test_an_interrupted_optimisation_resumes_bit_identically(surrogate, tmp_path, rule, all_to_all):
    model, data = surrogate
    kw = dict(k=8, eps=0.2, alpha=0.16, beta=10, passes=6, remask_every=2, batch_size=128, num_classes=4,
              mask_rule=rule, all_to_all=all_to_all, precision="fp32", progress=False, snapshot_at=(2, 5))
    full = optimize_trigger(model, data.images, data.labels, **kw)
    ckpt = tmp_path / "ck.safetensors"
    with pytest.raises(_Stop):
        optimize_trigger(model, data.images, data.labels, checkpoint=ckpt, log=_stop_after(3), **kw)
    state = load_tensors(ckpt)[1]["siba_optimize_checkpoint"]
    assert state["next_pass"] == 3 and len(state["history"]) == 3
    shutil.copy(ckpt, tmp_path / "zeroed.safetensors")
    lines: list[str] = []
    resumed = optimize_trigger(model, data.images, data.labels, checkpoint=ckpt, log=lines.append, **kw)
    assert lines[0] == f"resuming the trigger optimisation after pass 3 of 6 ({ckpt})"
    assert [line.split()[1] for line in lines[1:]] == ["4/6", "5/6", "6/6"]  # only the passes left were run
    assert torch.equal(resumed.delta, full.delta) and torch.equal(resumed.mask, full.mask)
    assert (resumed.best_pass, resumed.best_loss) == (full.best_pass, full.best_loss)
    assert resumed.history == full.history
    assert resumed.snapshots.keys() == full.snapshots.keys() == {2, 5}
    for q in (2, 5):
        assert all(torch.equal(a, b) for a, b in zip(resumed.snapshots[q], full.snapshots[q]))
    assert ckpt.is_file()  # left for the caller to remove once the trigger is saved
    # the comparison notices a resume that lost the current δ
    tensors, meta = load_tensors(tmp_path / "zeroed.safetensors")
    save_tensors(tmp_path / "zeroed.safetensors", {**tensors, "delta": torch.zeros_like(tensors["delta"])}, meta)
    lost = optimize_trigger(model, data.images, data.labels, checkpoint=tmp_path / "zeroed.safetensors", **kw)
    assert lost.history[3:] != full.history[3:]


def _files(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_a_checkpoint_of_other_settings_is_refused(surrogate, tmp_path):
    model, data = surrogate
    kw = dict(k=8, eps=0.2, alpha=0.16, beta=10, passes=4, remask_every=2, batch_size=128, num_classes=4,
              precision="fp32", progress=False)
    ckpt = tmp_path / "ck.safetensors"
    with pytest.raises(_Stop):
        optimize_trigger(model, data.images, data.labels, checkpoint=ckpt, log=_stop_after(2), **kw)
    before = _files(tmp_path)
    other = copy.deepcopy(model)
    with torch.no_grad():
        first = next(other.parameters())
        first[(0,) * first.dim()] += 1e-3
    cases = [
        (dict(kw, alpha=0.2), model, data.images, "was made with alpha=0.16, not alpha=0.2; use another --out or the "
         f"same settings (or delete {ckpt} to start afresh)"),
        (dict(kw, passes=5), model, data.images, "was made with passes=4, not passes=5;"),
        (dict(kw, all_to_all=True), model, data.images, "was made with target_rule=all-to-one, not "
         "target_rule=all-to-all;"),
        (dict(kw, seed=1), model, data.images, "was made with seed=0, not seed=1;"),
        (kw, other, data.images, "was made with another surrogate (weights "),
        (kw, model, data.images.flip(3), "was made on other images (fingerprint "),
    ]
    for options, net, images, message in cases:
        with pytest.raises(SibaError) as exc:
            optimize_trigger(net, images, data.labels, checkpoint=ckpt, **options)
        text = str(exc.value)
        assert text.startswith(f"the optimisation checkpoint {ckpt} ") and message in text, text
    assert _files(tmp_path) == before
    # with the same settings it continues
    assert len(optimize_trigger(model, data.images, data.labels, checkpoint=ckpt, **kw).history) == 4


def test_generate_continues_from_its_checkpoint(surrogate, tmp_path):
    model, data = surrogate
    attack = lambda: create_attack("siba", k=8, eps=0.2, passes=5, remask_every=2, precision="fp32")  # noqa: E731
    ref = attack().generate(data, model, progress=False)
    ckpt = tmp_path / "ck.safetensors"
    with pytest.raises(_Stop):
        attack().generate(data, model, progress=False, checkpoint=ckpt, log=_stop_after(2))
    got = attack().generate(data, model, progress=False, checkpoint=ckpt)
    assert torch.equal(got.delta, ref.delta) and torch.equal(got.mask, ref.mask)
    assert got.meta == ref.meta
    assert ckpt.is_file()  # generate leaves it: the caller removes it once the trigger is saved
    # another attack of the same budgets refuses the checkpoint (its mask is fixed, it is not siba)
    with pytest.raises(SibaError, match="was made with fixed_mask=none, not fixed_mask="):
        create_attack("sparse", k=8, eps=0.2, passes=5, remask_every=2, precision="fp32").generate(
            data, model, progress=False, checkpoint=ckpt)


def test_siba_optimize_resumes_an_interrupted_run(tmp_path, capsys, monkeypatch):
    from siba.attacks import sparse
    from siba.cli.main import main
    from siba.models import save_model

    from .test_cli import make_data

    data = make_data(tmp_path / "data", train=8, test=1)
    torch.manual_seed(0)
    save_model(create_model("fastnet", 3, widths=(8, 8, 8, 8)), tmp_path / "sur.safetensors")

    def argv(out, *extra):
        return ["optimize", "--data", str(data), "--surrogate", str(tmp_path / "sur.safetensors"), "--out",
                str(tmp_path / out), "--k", "6", "--passes", "5", "--remask-every", "2", "--batch-size", "8",
                "--set", "precision=fp32", "--device", "cpu", "--quiet", *extra]

    assert main(argv("ref")) == 0
    real = sparse.optimize_trigger

    def interrupted(*a, log, **kw):  # a Ctrl-C right after pass 2
        def log_then_stop(line: str) -> None:
            log(line)
            if line.startswith("pass 2/"):
                raise KeyboardInterrupt

        return real(*a, log=log_then_stop, **kw)

    for out in ("cut", "cut2"):
        monkeypatch.setattr(sparse, "optimize_trigger", interrupted)
        assert main(argv(out)) == 130
        monkeypatch.setattr(sparse, "optimize_trigger", real)
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["optimize-checkpoint.safetensors"]
    capsys.readouterr()
    assert main(argv("cut")) == 0  # the same command again continues from pass 3
    err = capsys.readouterr().err
    assert "resuming the trigger optimisation after pass 2 of 5" in err and "pass 1/5" not in err
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["trigger.json", "trigger.png",
                                                                     "trigger.safetensors"]
    ref, got = load_tensors(tmp_path / "ref" / "trigger.safetensors"), load_tensors(tmp_path / "cut" /
                                                                                      "trigger.safetensors")
    assert ref[0].keys() == got[0].keys() and all(torch.equal(ref[0][k], got[0][k]) for k in ref[0])
    strip = lambda d: {k: v for k, v in d.items() if k not in ("wall_s", "command")}  # noqa: E731
    ref_desc = json.loads((tmp_path / "ref" / "trigger.json").read_text())
    assert strip(ref_desc) == strip(json.loads((tmp_path / "cut" / "trigger.json").read_text()))
    assert len(ref_desc["history"]) == 5  # the same history, best pass and loss
    # with other settings the interrupted run is refused, and left as it was
    before = _files(tmp_path / "cut2")
    rc = main(argv("cut2", "--eps", "4/255"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "was made with eps=0.03137254901960784, not eps=0.01568627450980392" in err[0]
    assert _files(tmp_path / "cut2") == before
