"""Bad run configs, drawn by hypothesis: ``siba run`` answers each with exit status 2 and one line.

Each drawn config is the shipped smoke config with one to three mutations, each of which makes
the config invalid by construction: a value of the wrong type or out of range, an unknown key, an
empty list or mapping, a huge or non-finite number or a very long text, at every level (top keys,
``surrogate``/``victim``, their ``train`` and ``model_args``, the attacks and their settings, the
rates). Validity is judged by the small, deliberately lenient oracles below (they accept more than
siba does: a value they call possibly valid is never drawn), and the pipeline's stages after its
checks are replaced by a failure, so a config that slipped through would fail the test at once
instead of training. Mutated paths are never nested, so no mutation can undo another.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from siba.attacks import ATTACKS
from siba.cli.main import main
from siba.experiments import pipeline as pipeline_module
from siba.models.fastnet import FastNet
from siba.training import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
MODEL_NAMES = {"fastnet", "resnet18", "resnet34", "vgg16", "vgg19"}
LONG = "x" * 5000


# --------------------------------------------------------------------------- lenient validity oracles


def _as_number(v: Any) -> float | None:
    """``v`` as the number a lenient reader could take it for (fractions such as ``8/255`` included)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return float(v) if abs(v) < 10 ** 308 else (math.inf if v > 0 else -math.inf)
    if isinstance(v, float):
        return v
    if isinstance(v, str):
        num, _, den = v.strip().partition("/")
        try:
            return float(num) / float(den) if den else float(v)
        except (ValueError, ZeroDivisionError, OverflowError):
            return None
    return None


def number(ok: Callable[[float], bool]) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        x = _as_number(v)
        return x is not None and math.isfinite(x) and ok(x)
    return check


def whole(lo: int, hi: float = math.inf, *, text: bool = True) -> Callable[[Any], bool]:
    """A whole number in ``[lo, hi]``: an int, or (``text``) a whole float or a string holding one."""
    def check(v: Any) -> bool:
        if isinstance(v, int) and not isinstance(v, bool):
            return lo <= v <= hi
        if not text:
            return False
        x = _as_number(v)
        return x is not None and math.isfinite(x) and x.is_integer() and lo <= x <= hi
    return check


def one_of(*allowed: Any) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in allowed


def kind(*types: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, types) and not (isinstance(v, bool) and bool not in types)


def nullable(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def anything(v: Any) -> bool:  # a field whose strings and numbers can only be judged against the data
    return True


def name_ok(v: Any) -> bool:
    return v is None or isinstance(v, str)


FLAG = kind(bool)
SEED = whole(0, 2 ** 32 - 1)
ATTACK_SEED = whole(0, 2 ** 32 - 1, text=False)

TOP: dict[str, Callable[[Any], bool]] = {
    "name": name_ok, "data": kind(str), "image_size": nullable(whole(1, 1024, text=False)), "seed": SEED,
    "device": lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")),
    "target": whole(0, text=False), "all_to_all": FLAG, "clean_baseline": FLAG, "export": FLAG, "track_asr": FLAG,
    "rates": lambda v: (isinstance(v, list) and len(v) > 0) or number(lambda x: 0 < x < 1)(v),
    "description": nullable(kind(str)), "surrogate": nullable(kind(dict)), "victim": nullable(kind(dict)),
    "attacks": kind(dict), "train_fraction": number(lambda x: 0 < x <= 1),
}
STAGE: dict[str, Callable[[Any], bool]] = {
    "model": lambda v: isinstance(v, str) and v in MODEL_NAMES, "model_args": nullable(kind(dict)),
    "train": nullable(kind(dict)), "fraction": number(lambda x: 0 < x <= 1), "path": nullable(kind(str)),
}
TRAIN: dict[str, Callable[[Any], bool]] = {
    "epochs": whole(0, 1_000_000), "batch_size": whole(1), "eval_batch_size": whole(1), "eval_every": whole(0),
    "crop_pad": whole(0, 256), "seed": SEED, "lr": number(lambda x: x > 0), "gamma": number(lambda x: x > 0),
    "momentum": number(lambda x: 0 <= x < 1), "weight_decay": number(lambda x: x >= 0),
    "warmup": number(lambda x: 0 <= x <= 1), "label_smoothing": number(lambda x: 0 <= x < 1),
    "nesterov": FLAG, "flip": FLAG, "channels_last": FLAG, "tta": FLAG,
    "schedule": one_of("step", "onecycle", "constant"), "precision": one_of("auto", "bf16", "fp32"),
    "milestones": nullable(kind(list)),
}
COMMON_ATTACK: dict[str, Callable[[Any], bool]] = {
    "target": whole(0, text=False), "all_to_all": FLAG, "seed": ATTACK_SEED,
    "attack": lambda v: isinstance(v, str) and v in ATTACKS,
}
SIBA: dict[str, Callable[[Any], bool]] = {
    **COMMON_ATTACK, "k": whole(1, text=False), "eps": number(lambda x: 0 < x <= 1),
    "alpha": nullable(number(lambda x: x > 0)), "beta": number(lambda x: x > 0), "passes": whole(1, text=False),
    "remask_every": whole(1, text=False), "batch_size": whole(1, text=False),
    "mask_rule": one_of("gradient", "projection"), "max_images": nullable(whole(1, text=False)),
    "precision": one_of("auto", "bf16", "fp32"),
}
BADNETS: dict[str, Callable[[Any], bool]] = {
    **COMMON_ATTACK, "size": whole(1, text=False), "pattern": one_of("checkerboard", "white"),
    "corner": one_of("bottom-right", "bottom-left", "top-right", "top-left"), "margin": whole(0, text=False),
}

# every field a mutation may set: (path in the config, the oracle of its possibly valid values)
FIELDS: list[tuple[tuple[Any, ...], Callable[[Any], bool]]] = [
    *(((k,), ok) for k, ok in TOP.items()),
    *(((stage, k), ok) for stage in ("surrogate", "victim") for k, ok in STAGE.items()),
    *(((stage, "train", k), ok) for stage in ("surrogate", "victim") for k, ok in TRAIN.items()),
    *((("attacks", "siba", k), ok) for k, ok in SIBA.items()),
    *((("attacks", "badnets", k), ok) for k, ok in BADNETS.items()),
    (("attacks", "siba"), nullable(kind(dict))),
    (("attacks", "badnets"), nullable(kind(dict))),
    (("rates", 0), number(lambda x: 0 < x < 1)),
]


def _options(f: Callable) -> set[str]:
    return set(inspect.signature(f).parameters)


# where an unknown key can go, with the keys known there (what the code accepts, should it grow)
KEY_LEVELS: list[tuple[tuple[Any, ...], set[str]]] = [
    ((), set(TOP) | {"rate"}),
    *(((stage,), set(STAGE)) for stage in ("surrogate", "victim")),
    *(((stage, "train"), set(TRAIN) | {f.name for f in fields(TrainConfig)}) for stage in ("surrogate", "victim")),
    *(((stage, "model_args"), _options(FastNet)) for stage in ("surrogate", "victim")),
    (("attacks", "siba"), set(SIBA) | _options(ATTACKS["siba"].__init__)),
    (("attacks", "badnets"), set(BADNETS) | _options(ATTACKS["badnets"].__init__)),
]


# --------------------------------------------------------------------------- drawing mutations

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from([10 ** 30, -10 ** 30, 2 ** 64, 10 ** 400, 1e300, -1e300, math.inf, -math.inf, math.nan, LONG,
                     "", " ", "8/255", "1/0", "0/0", "1e400", "nan", "inf", "-1", "0", "1.5", "true", "yes"]),
)
junk = st.one_of(scalars, st.lists(scalars, max_size=3),
                 st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), scalars, max_size=3))


@st.composite
def set_field(draw) -> tuple[tuple[Any, ...], Any]:
    path, ok = draw(st.sampled_from(FIELDS))
    return path, draw(junk.filter(lambda v: not ok(v)))


@st.composite
def unknown_key(draw) -> tuple[tuple[Any, ...], Any]:
    level, known = draw(st.sampled_from(KEY_LEVELS))
    key = draw(st.one_of(st.text(min_size=1, max_size=12), st.integers(), st.just(LONG)).filter(
        lambda k: k not in known))
    return (*level, key), draw(junk)


@st.composite
def special(draw) -> tuple[tuple[Any, ...], Any]:
    """Mutations that need a particular value: empty or doubled settings, names that cannot be folders."""
    return draw(st.sampled_from([
        (("attacks",), {}), (("rates",), []), (("rate",), 0.05), (("precision",), "bf16"),
        (("rates",), [0.05, 0.05]), (("rates",), [0.05, 0.05000001]),
        (("name",), LONG), (("name",), "a/b"), (("name",), ".."), (("name",), ""), (("name",), "two\nlines"),
        (("data",), LONG), (("data",), ""), (("data",), "a\nb"), (("victim", "path"), LONG),
        (("victim", "path"), ""), (("device",), "meta"), (("device",), "cuda:x"), (("image_size",), 10 ** 30),
        (("attacks", "clean"), {"attack": "badnets"}), (("attacks", "../escape"), {"attack": "badnets"}),
        (("attacks", "a@b"), {"attack": "badnets"}), (("attacks", LONG), {"attack": "badnets"}),
        (("attacks", "nope"), {}), (("attacks", 7), {"attack": "badnets"}),
        (("victim", "model_args", "widths"), [10 ** 30] * 4), (("victim", "model_args", "widths"), []),
        (("victim", "train", "epochs"), 10 ** 400), (("victim", "train", "seed"), 2 ** 64),
        (("attacks", "siba", "eps"), 10 ** 400), (("attacks", "siba", "alpha"), 10 ** 400),
        (("surrogate", "fraction"), 10 ** 400), (("attacks", "badnets", "seed"), 2 ** 64),
    ]))


mutation = st.one_of(set_field(), unknown_key(), special())
WHOLE_CONFIG = [None, [], [BASE], "siba", 0, 1.5, True]  # not a mapping at all


def _nested(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[:len(b)] == b or b[:len(a)] == a


def apply(mutations: list[tuple[tuple[Any, ...], Any]]) -> tuple[Any, list[tuple[tuple[Any, ...], Any]]]:
    """The smoke config with the first of ``mutations`` and each later one not nested in an earlier one."""
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    kept: list[tuple[tuple[Any, ...], Any]] = []
    for path, value in mutations:
        if any(_nested(path, p) for p, _ in kept):
            continue
        kept.append((path, value))
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return raw, kept


def run_bad_config(tmp_path: Path, capsys, raw: Any, text: str | None = None) -> str:
    """``siba run`` on ``raw`` (or on ``text`` as the file): exit 2, one line, no traceback, no run folder."""
    capsys.readouterr()
    work = Path(tmp_path) / f"case{next(_cases)}"
    work.mkdir()
    cfg = work / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=False) if text is None else text)
    out = work / "run"
    rc = main(["run", str(cfg), "--out", str(out), "--quiet", "--device", "cpu"])
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert rc == 2, (raw, cap.err)
    assert len(lines) == 1 and lines[0].startswith("siba: error: "), (raw, cap.err)
    assert "Traceback" not in cap.err
    assert not out.exists(), raw
    return lines[0]


_cases = itertools.count()


@pytest.fixture
def no_training(monkeypatch):
    """A config that passes every check would reach the surrogate stage: fail there instead of training."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a config the test drew as invalid passed every check: {self.cfg}")

    monkeypatch.setattr(pipeline_module.Pipeline, "surrogate", refuse)
    monkeypatch.setattr(pipeline_module.Pipeline, "clean", refuse)


# --------------------------------------------------------------------------- tests


def test_the_oracles_accept_the_base_config():
    """The mutations start from a valid config, which the oracles must call valid (else they judge nothing)."""
    for path, ok in FIELDS:
        node = BASE
        try:
            for key in path:
                node = node[key]
        except (KeyError, IndexError):
            continue
        assert ok(node), path
    assert SEED(3) and SEED("1e2") and not SEED(2 ** 32) and not SEED(1.5) and not SEED(True)
    assert SIBA["eps"]("8/255") and not SIBA["eps"]("8/0") and not SIBA["eps"](10 ** 400)


@settings(derandomize=True, max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
@example(mutations=[(("victim", "train", "flip"), "no")])  # once read as true: flips on
@example(mutations=[(("all_to_all",), "false")])  # once read as true: every class attacked
@example(mutations=[(("attacks", "siba"), [["k", 5]])])  # once read as {k: 5}
@example(mutations=[(("victim", "model_args"), [])])  # once read as {}
@example(mutations=[(("victim", "train", "crop_pad"), 10 ** 30)])  # once crashed in torch.randint
def test_a_bad_config_is_one_line_and_exit_2(tmp_path, capsys, no_training, mutations):
    raw, kept = apply(mutations)
    run_bad_config(tmp_path, capsys, raw)


@pytest.mark.parametrize("raw", WHOLE_CONFIG, ids=repr)
def test_a_config_that_is_not_a_mapping(tmp_path, capsys, no_training, raw):
    assert "must be a YAML mapping" in run_bad_config(tmp_path, capsys, raw)


@pytest.mark.parametrize("text, needle", [
    ("name: [unclosed\n", "is not valid YAML"),
    ("name: a\n\tdata: b\n", "is not valid YAML"),
    ("seed: " + "1" * 5000 + "\n", "is not a usable YAML config"),  # beyond Python's int-from-text limit
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "is not a usable YAML config"),  # nesting beyond the stack
    ("", "must be a YAML mapping"),
], ids=["unclosed", "tab", "5000-digit-int", "deep-nesting", "empty"])
def test_config_text_that_yaml_cannot_read(tmp_path, capsys, no_training, text, needle):
    assert needle in run_bad_config(tmp_path, capsys, None, text)


def test_config_bytes_that_are_not_text(tmp_path, capsys, no_training):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(b"name: \xff\xfe\xfa\n")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is not valid YAML" in err[0]
    assert not out.exists()


# Errors that only the data can reveal: raised by Pipeline.prepare after loading the shipped subset
# (10 classes of 32×32 images, 5,000 training images, 500 a class), before the run folder is made.
@pytest.mark.parametrize("mutation, needle", [
    ((("target",), 10), "target class 10 is not among the 10 classes"),
    ((("attacks", "badnets", "target"), 10 ** 30), "is not among the 10 classes"),
    ((("attacks", "siba", "k"), 10 ** 30), "more than the 32×32=1024 pixels"),
    ((("attacks", "badnets", "size"), 33), "does not fit 32×32 images"),
    ((("attacks", "badnets", "margin"), 30), "does not fit 32×32 images"),
    ((("rates",), [0.95]), "only 4500 are eligible"),
    ((("victim", "path"), "no/such/model.safetensors"), "victim.path does not exist"),
], ids=["target", "attack-target", "k", "size", "margin", "rate", "path"])
def test_bad_settings_that_only_the_data_reveals(tmp_path, capsys, no_training, mutation, needle):
    raw, _ = apply([mutation])
    assert needle in run_bad_config(tmp_path, capsys, raw)
