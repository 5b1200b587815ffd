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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..attacks import create_attack, parse_number
from ..errors import SibaError
from ..models import MODELS, create_model
from ..poisoning import check_rate
from ..training import TrainConfig
from ..training.trainer import whole_number

TOP_KEYS = {"name", "data", "image_size", "seed", "device", "target", "all_to_all", "rates", "rate", "surrogate",
            "victim", "attacks", "clean_baseline", "export", "track_asr", "precision", "description"}
MODEL_KEYS = {"model", "model_args", "train", "fraction", "path"}


@dataclass
class ModelStage:
    model: str = "fastnet"
    model_args: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    fraction: float = 1.0  # share of the training set (limited-data surrogates)
    path: str | None = None  # an existing model file instead of training one

    @classmethod
    def parse(cls, d: Any, where: str, seed: int) -> "ModelStage":
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise SibaError(f"{where} must be a mapping (model, model_args, train, ...)")
        unknown = sorted(set(d) - MODEL_KEYS)
        if unknown:
            raise SibaError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(MODEL_KEYS))}")
        model = d.get("model", "fastnet")
        if not isinstance(model, str) or model not in MODELS:
            raise SibaError(f"unknown model {model!r} in {where}; choose from {', '.join(sorted(MODELS))}")
        model_args = d.get("model_args") or {}
        if not isinstance(model_args, dict) or not all(isinstance(k, str) for k in model_args):
            raise SibaError(f"{where}.model_args must be a mapping of options, e.g. {{width: 32}}, got {model_args!r}")
        if model_args:  # build it on the meta device (no memory, no arithmetic): bad options fail now
            try:
                with torch.device("meta"):
                    create_model(model, 10, **model_args)
            except SibaError as exc:
                raise SibaError(f"{where}.model_args: {exc}") from None
        train = d.get("train") or {}
        if not isinstance(train, dict):
            raise SibaError(f"{where}.train must be a mapping of training options, got {train!r}")
        train = dict(train)
        train.setdefault("seed", seed)
        fraction = parse_number(d.get("fraction", 1.0), f"{where}.fraction")
        if not 0 < fraction <= 1:
            raise SibaError(f"{where}.fraction must be in (0, 1], got {fraction}")
        path = d.get("path")
        if path is not None and not isinstance(path, str):
            raise SibaError(f"{where}.path must be a file path, got {path!r}")
        try:
            train_config = TrainConfig.from_dict(train)
        except SibaError as exc:
            raise SibaError(f"{where}.train: {exc}") from None
        return cls(model, dict(model_args), train_config, fraction, path)


@dataclass
class RunConfig:
    name: str
    data: str = "cifar10-mini"
    image_size: int | None = None
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
        return json.loads(json.dumps(asdict(self)))


def parse_config(raw: Any, source: str = "config") -> RunConfig:
    """Check a config mapping and build a :class:`RunConfig` (one-line errors)."""
    if not isinstance(raw, dict):
        raise SibaError(f"{source}: a run config must be a YAML mapping")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise SibaError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    try:
        seed = whole_number(raw.get("seed", 0), "seed")
    except SibaError as exc:
        raise SibaError(f"{source}: {exc}") from None
    image_size = raw.get("image_size")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise SibaError(f"{source}: image_size must be null or a number of pixels ≥ 1, got {image_size!r}")
    rates = raw.get("rates", raw.get("rate", 0.01))
    rates = rates if isinstance(rates, list) else [rates]
    if not rates:
        raise SibaError(f"{source}: rates is empty")
    rates = [check_rate(r) for r in rates]
    target = raw.get("target", 0)
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise SibaError(f"{source}: target must be a class index ≥ 0, got {target!r}")
    attacks = raw.get("attacks") or {}
    if not isinstance(attacks, dict) or not attacks:
        raise SibaError(f"{source}: 'attacks' must map attack names to their settings, e.g. {{siba: {{k: 100}}}}")
    cfg = RunConfig(
        name=str(raw.get("name") or Path(source).stem),
        data=str(raw.get("data", "cifar10-mini")),
        image_size=image_size,
        seed=seed,
        device=str(raw.get("device", "auto")),
        target=target,
        all_to_all=bool(raw.get("all_to_all", False)),
        rates=rates,
        surrogate=ModelStage.parse(raw.get("surrogate"), "surrogate", seed),
        victim=ModelStage.parse(raw.get("victim"), "victim", seed),
        attacks={str(k): dict(v or {}) for k, v in attacks.items()},
        clean_baseline=bool(raw.get("clean_baseline", True)),
        export=bool(raw.get("export", False)),
        track_asr=bool(raw.get("track_asr", False)),
        description=str(raw.get("description", "")),
    )
    for name in cfg.attacks:  # construct each once: bad settings fail here, before any work
        cfg.attack(name)
    return cfg


def load_config(path: str | os.PathLike) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise SibaError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SibaError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_config(raw, str(path))
