"""Run configurations (YAML): what ``siba run CONFIG`` does, checked before any work.

A config names the data set, the surrogate and victim (model and training recipe), the
attacks with their settings, and the poisoning rate(s)::

    name: demo
    data: cifar10-mini
    seed: 0
    target: 0
    rates: [0.05]
    surrogate: {model: fastnet, train: {epochs: 30, schedule: onecycle, lr: 0.2}}
    victim:    {model: fastnet, train: {epochs: 40, schedule: onecycle, lr: 0.2}}
    attacks:
      siba: {k: 100, eps: 8/255, passes: 30}
      badnets: {}

See ``docs/configs.md`` for every key.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..attacks import create_attack, parse_number
from ..attacks.base import check_seed
from ..data import BUILTIN
from ..errors import SibaError, first_line
from ..models import MODELS, create_model
from ..poisoning import check_rate
from ..training import TrainConfig
from ..training.trainer import whole_number

TOP_KEYS = {"name", "data", "image_size", "train_fraction", "seed", "device", "target", "all_to_all", "rates", "rate",
            "surrogate", "victim", "attacks", "clean_baseline", "export", "track_asr", "description"}
MODEL_KEYS = {"model", "model_args", "train", "fraction", "path", "init"}
FLAGS = ("all_to_all", "clean_baseline", "export", "track_asr")  # top-level true/false settings
# Upper bounds for numbers that are legal in any size but crash a run part-way when absurd: an image side
# beyond MAX_IMAGE_SIZE makes the decoded data set exhaust memory (and overflows PIL's resize long before
# 10**30). The training recipe's bounds (epochs, crop padding, seed) are TrainConfig's own.
MAX_IMAGE_SIZE = 1024
MAX_NAME = 100  # characters of a run or attack name, each of which names a folder
ATTACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a folder name, and `--only NAME@RATE` can split it
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _key(k: Any) -> str:
    """A key as an error message shows it: a plain name as it is, anything else (a number, null, text
    with a line break or blanks around it) as its repr, so that the message stays one readable line."""
    return k if isinstance(k, str) and k and k.isprintable() and k.strip() == k else repr(k)


def _unknown(d: dict[Any, Any], known: set[str]) -> list[str]:
    """The keys of ``d`` that are not in ``known``, as sorted text (YAML keys may be numbers or null)."""
    return sorted(_key(k) for k in d if k not in known)


def _text_keys(d: dict[Any, Any], where: str) -> None:
    """A one-line error unless every key of ``d`` is a plain name (other code prints the keys it rejects)."""
    bad = [k for k in d if _key(k) != k]
    if bad:
        raise SibaError(f"{where} has a key that is not a name: {bad[0]!r}")


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise SibaError(f"{what} must be true or false, got {value!r}")
    return value


def _path_text(value: Any, what: str) -> str:
    """``value`` if it is text that can name a file (it need not exist yet), else a one-line error."""
    if not isinstance(value, str) or not value.strip():
        raise SibaError(f"{what} must be a file path, got {value!r}")
    if not value.isprintable():  # a line break or other control character: no such file is meant
        raise SibaError(f"{what} must be a file path without control characters, got {value!r}")
    try:
        Path(value).expanduser().exists()  # a name too long for the file system raises here, not later
    except (OSError, ValueError) as exc:
        raise SibaError(f"{what} cannot be a file path: {getattr(exc, 'strerror', None) or exc}") from None
    return value


def _run_name(value: Any) -> str:
    """``value`` if it can name the run folder ``runs/<name>`` (one path component), else a one-line error."""
    if (not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or value.strip() in ("", ".", "..")
            or not value.isprintable() or "/" in value or "\\" in value):
        raise SibaError(f"name must be a folder name of at most {MAX_NAME} characters, without / or \\, "
                        f"got {value!r}")
    return value


def _attack_name(value: Any) -> str:
    """``value`` if it can name an attack: a folder name that ``--only NAME@RATE`` can split off, not ``clean``."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or not ATTACK_NAME.fullmatch(value):
        raise SibaError(f"an attack's name must be at most {MAX_NAME} letters, digits and . _ + - "
                        f"(it names a folder), got {value!r}")
    if value == "clean":
        raise SibaError("'clean' names the clean baseline (--only clean); give the attack another name")
    return value


def share(value: Any, what: str) -> float:
    """A share of the training set in (0, 1] (a number or text such as ``1/4``); one-line errors."""
    out = parse_number(value, what)
    if not 0 < out <= 1:
        raise SibaError(f"{what} must be in (0, 1], got {out:g}")
    return out


@dataclass
class ModelStage:
    model: str = "fastnet"
    model_args: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    fraction: float = 1.0  # share of the training set (limited-data surrogates)
    path: str | None = None  # an existing model file instead of training one
    init: str | None = None  # weights to start the training from (e.g. torchvision's ImageNet file)

    @classmethod
    def parse(cls, d: Any, where: str, seed: int) -> "ModelStage":
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise SibaError(f"{where} must be a mapping (model, model_args, train, ...), got {d!r}")
        unknown = _unknown(d, MODEL_KEYS)
        if unknown:
            raise SibaError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(MODEL_KEYS))}")
        model = d.get("model", "fastnet")
        if not isinstance(model, str) or model not in MODELS:
            raise SibaError(f"unknown model {model!r} in {where}; choose from {', '.join(sorted(MODELS))}")
        model_args = d.get("model_args")
        model_args = {} if model_args is None else model_args
        if not isinstance(model_args, dict) or not all(isinstance(k, str) for k in model_args):
            raise SibaError(f"{where}.model_args must be a mapping of options, e.g. {{width: 32}}, got {model_args!r}")
        _text_keys(model_args, f"{where}.model_args")
        if model_args:  # build it on the meta device (no memory, no arithmetic): bad options fail now
            try:
                with torch.device("meta"):
                    create_model(model, 10, **model_args)
            except SibaError as exc:  # torch's own message may carry its C++ stack: its first line says it
                raise SibaError(f"{where}.model_args: {first_line(exc)}") from None
            except (OverflowError, MemoryError) as exc:  # a width beyond what torch can index
                raise SibaError(f"{where}.model_args: bad options for model {model!r}: {first_line(exc)}") from None
        train = d.get("train")
        train = {} if train is None else train
        if not isinstance(train, dict):
            raise SibaError(f"{where}.train must be a mapping of training options, got {train!r}")
        _text_keys(train, f"{where}.train")
        train = dict(train)
        train.setdefault("seed", seed)
        fraction = share(d.get("fraction", 1.0), f"{where}.fraction")
        path = d.get("path")
        if path is not None:
            _path_text(path, f"{where}.path")
        init = d.get("init")
        if init is not None:
            _path_text(init, f"{where}.init")
            if path is not None:
                raise SibaError(f"{where} has both path (a finished model, not trained) and init (weights a "
                                "training starts from); keep one")
        try:
            train_config = TrainConfig.from_dict(train)  # checks the flags, bounds and seed too
        except SibaError as exc:
            raise SibaError(f"{where}.train: {exc}") from None
        return cls(model, dict(model_args), train_config, fraction, path, init)


@dataclass
class RunConfig:
    name: str
    data: str = "cifar10-mini"
    image_size: int | None = None
    train_fraction: float = 1.0  # a seeded, class-stratified share of the training set for every stage
    seed: int = 0
    device: str = "auto"
    target: int = 0
    all_to_all: bool = False
    rates: list[float] = field(default_factory=lambda: [0.01])
    surrogate: ModelStage = field(default_factory=ModelStage)
    victim: ModelStage = field(default_factory=ModelStage)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    clean_baseline: bool = True
    export: bool = False
    track_asr: bool = False
    description: str = ""

    def attack(self, name: str):
        """A fresh attack object for ``name`` with the run's target, rule and seed."""
        params = dict(self.attacks[name] or {})
        kind = params.pop("attack", name)
        params.setdefault("target", self.target)
        params.setdefault("all_to_all", self.all_to_all)
        params.setdefault("seed", self.seed)
        return create_attack(kind, **params)

    def needs_surrogate(self) -> bool:
        return any(self.attack(a).needs_surrogate for a in self.attacks)

    def to_dict(self) -> dict[str, Any]:
        out = json.loads(json.dumps(asdict(self)))
        for stage in ("surrogate", "victim"):  # keys of configs made before `init` existed stay as they were
            if out[stage].get("init") is None:
                out[stage].pop("init", None)
        return out


def parse_config(raw: Any, source: str = "config") -> RunConfig:
    """Check a config mapping and build a :class:`RunConfig` (one-line errors)."""
    if not isinstance(raw, dict):
        raise SibaError(f"{source}: a run config must be a YAML mapping")
    unknown = _unknown(raw, TOP_KEYS)
    if unknown:
        hint = " (precision is a setting of surrogate.train, victim.train and each attack)" \
            if "precision" in unknown else ""
        raise SibaError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP_KEYS))}{hint}")
    try:
        seed = check_seed(whole_number(raw.get("seed", 0), "seed"))
        name = raw.get("name")
        if name is not None:
            _run_name(name)
        data = raw.get("data", "cifar10-mini")
        if not (isinstance(data, str) and data in BUILTIN):
            _path_text(data, "data")
        device = raw.get("device", "auto")
        if not isinstance(device, str) or not DEVICE.fullmatch(device):
            raise SibaError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            raise SibaError(f"description must be text, got {description!r}")
        flags = {key: _flag(raw.get(key, default), key)
                 for key, default in zip(FLAGS, (False, True, False, False))}
    except SibaError as exc:
        raise SibaError(f"{source}: {exc}") from None
    image_size = raw.get("image_size")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or not 1 <= image_size <= MAX_IMAGE_SIZE):
        raise SibaError(f"{source}: image_size must be null or a number of pixels from 1 to {MAX_IMAGE_SIZE}, "
                        f"got {image_size!r}")
    try:
        train_fraction = share(raw.get("train_fraction", 1.0), "train_fraction")
    except SibaError as exc:
        raise SibaError(f"{source}: {exc}") from None
    if "rates" in raw and "rate" in raw:
        raise SibaError(f"{source}: give rates or rate, not both")
    rates = raw["rates"] if "rates" in raw else raw.get("rate", 0.01)
    rates = rates if isinstance(rates, list) else [rates]
    if not rates:
        raise SibaError(f"{source}: rates is empty")
    rates = [check_rate(parse_number(r, "rate") if isinstance(r, str) else r) for r in rates]
    tags = [f"{r:g}" for r in rates]  # a victim's folder is named after its rate, so two rates must read apart
    twice = sorted({t for t in tags if tags.count(t) > 1})
    if twice:
        raise SibaError(f"{source}: rates holds {', '.join(twice)} twice")
    target = raw.get("target", 0)
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise SibaError(f"{source}: target must be a class index ≥ 0, got {target!r}")
    attacks = raw.get("attacks")
    if not isinstance(attacks, dict) or not attacks:
        raise SibaError(f"{source}: 'attacks' must map attack names to their settings, e.g. {{siba: {{k: 100}}}}")
    settings: dict[str, dict[str, Any]] = {}
    for key, options in attacks.items():
        where = f"attacks.{key}"
        try:
            _attack_name(key)
        except SibaError as exc:
            raise SibaError(f"{source}: {exc}") from None
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise SibaError(f"{source}: {where} must be a mapping of the attack's settings, got {options!r}")
        _text_keys(options, f"{source}: {where}")
        settings[key] = dict(options)
    cfg = RunConfig(
        name=name if name is not None else Path(source).stem,
        data=data,
        image_size=image_size,
        train_fraction=train_fraction,
        seed=seed,
        device=device,
        target=target,
        all_to_all=flags["all_to_all"],
        rates=rates,
        surrogate=ModelStage.parse(raw.get("surrogate"), "surrogate", seed),
        victim=ModelStage.parse(raw.get("victim"), "victim", seed),
        attacks=settings,
        clean_baseline=flags["clean_baseline"],
        export=flags["export"],
        track_asr=flags["track_asr"],
        description=description or "",
    )
    for key in cfg.attacks:  # construct each once: bad settings fail here, before any work
        try:
            cfg.attack(key)
        except SibaError as exc:
            raise SibaError(f"{source}: attacks.{key}: {exc}") from None
    return cfg


def load_config(path: str | os.PathLike) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise SibaError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_bytes())
    except OSError as exc:
        raise SibaError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SibaError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except (ValueError, RecursionError) as exc:  # an integer of more than 4,300 digits; nesting beyond the stack
        raise SibaError(f"{path} is not a usable YAML config: {str(exc).splitlines()[0] if str(exc) else exc!r}") \
            from None
    return parse_config(raw, str(path))
