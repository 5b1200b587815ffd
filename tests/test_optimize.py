"""The SIBA optimisation: Lemma 1, exact budgets, TUAP/SIBA success on a trained surrogate."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siba.attacks import Trigger, create_attack, l0_project, l0_support, optimize_trigger, topk_mask
from siba.errors import SibaError
from siba.models import create_model
from siba.training import TrainConfig, train

from siba.data import ImageSet


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
    trig = Trigger(res.delta, res.mask, eps=eps, k=k, num_classes=4)
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
