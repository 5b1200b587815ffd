"""The three scales of a paper item: the data, models, recipes and attack settings each one uses.

- ``quick``: the CIFAR-10 subset shipped with siba (5,000 / 1,000 images), fastnet 16-32-64-128,
  24 epochs (the demo's recipe), 10% poisoning (1% would be 50 images); minutes an item on a 2-core CPU.
- ``cpu``: the full CIFAR-10 (``../shared/datasets/cifar10-jpeg`` by default, or ``--data``),
  fastnet 32-64-128-256, 16 epochs, 1% poisoning: the regime of configs/table1-cifar10-cpu.yaml
  (about 25–45 minutes a victim on a 2-core CPU).
- ``paper``: the paper's settings for a GPU: ResNet-18, 100 epochs, SGD lr 0.1 ÷10 at 60 and 90,
  pad-4 crop + flip, 1% poisoning, SIBA with N = 200 passes and T = 5 (data ``cifar10``: a CIFAR-10
  the user has, see docs/data.md).

The quick and cpu victims train WITHOUT the random crop (flip only): every result at those scales
holds for that recipe, not the paper's (see issue 18 and docs/design.md).
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import SibaError

SCALES = ("quick", "cpu", "paper")
CPU_DATA = "../shared/datasets/cifar10-jpeg"

_QUICK_TRAIN = {"epochs": 24, "batch_size": 128, "lr": 0.2, "schedule": "onecycle", "crop_pad": 0, "eval_every": 0}
_FAST_TRAIN = {"epochs": 16, "batch_size": 128, "lr": 0.2, "schedule": "onecycle", "crop_pad": 0, "eval_every": 0}
_PAPER_TRAIN = {"epochs": 100, "batch_size": 128, "lr": 0.1, "schedule": "step", "milestones": [60, 90],
                "eval_every": 10}

BASES: dict[str, dict[str, Any]] = {
    "quick": {
        "data": "cifar10-mini", "seed": 0, "target": 0, "rates": [0.1], "clean_baseline": False,
        "surrogate": {"model": "fastnet", "model_args": {"widths": [16, 32, 64, 128]},
                      "train": {**_QUICK_TRAIN, "seed": 1}},
        "victim": {"model": "fastnet", "model_args": {"widths": [16, 32, 64, 128]}, "train": dict(_QUICK_TRAIN)},
    },
    "cpu": {
        "data": CPU_DATA, "seed": 0, "target": 0, "rates": [0.01], "clean_baseline": False,
        "surrogate": {"model": "fastnet", "model_args": {"widths": [32, 64, 128, 256]},
                      "train": {**_FAST_TRAIN, "seed": 0}},
        "victim": {"model": "fastnet", "model_args": {"widths": [32, 64, 128, 256]},
                   "train": {**_FAST_TRAIN, "seed": 1}},
    },
    "paper": {
        "data": "cifar10", "seed": 0, "target": 0, "rates": [0.01], "clean_baseline": False,
        "surrogate": {"model": "resnet18", "train": dict(_PAPER_TRAIN)},
        "victim": {"model": "resnet18", "train": {**_PAPER_TRAIN, "seed": 1}},
    },
}

# the settings of each attack at each scale (the sparse family shares k, ε and the step)
_SIBA = {
    "quick": {"k": 100, "eps": "8/255", "alpha": "0.4/255", "passes": 20, "max_images": 2500},
    "cpu": {"k": 100, "eps": "8/255", "alpha": "0.4/255", "passes": 10, "remask_every": 2, "max_images": 20000},
    "paper": {"k": 100, "eps": "8/255", "passes": 200, "remask_every": 5, "batch_size": 128},
}


def attack_settings(kind: str, scale: str, **override: Any) -> dict[str, Any]:
    """The settings of attack ``kind`` at ``scale`` (``override`` wins), with ``attack: kind``."""
    if kind in ("siba", "sparse"):
        base = dict(_SIBA[scale])
        if kind == "sparse":
            base.pop("remask_every", None)  # a fixed mask: re-masking does nothing
    elif kind == "tuap":
        base = {k: v for k, v in _SIBA[scale].items() if k not in ("k", "remask_every")}
    elif kind == "random":
        base = {"k": 100, "eps": "8/255"}
    elif kind == "blended":
        base = {"alpha": 0.2}
    elif kind == "wanet":
        base = {"grid_size": 4, "strength": 0.5}
    elif kind == "issba":
        base = {"bits": 20, **({"steps": 1500} if scale == "quick" else {"steps": 3000, "max_images": 10000}
                               if scale == "cpu" else {})}
    else:
        base = {}
    return {"attack": kind, **base, **override}


def base_config(scale: str, data: str | None = None, **override: Any) -> dict[str, Any]:
    """A fresh raw config (no attacks yet) for ``scale``; ``data`` replaces the scale's data set."""
    if scale not in BASES:
        raise SibaError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    raw = copy.deepcopy(BASES[scale])
    if data:
        raw["data"] = data
    for key, value in override.items():
        if key in ("surrogate", "victim") and isinstance(value, dict) and "model" in value:
            value = {"model_args": {}, **value}  # another model: the scale's model_args were for its own
            raw[key].pop("model_args", None)
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = _merge(raw[key], value)
        else:
            raw[key] = copy.deepcopy(value)
    return raw


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def recipe_line(scale: str) -> str:
    """One line naming a scale's victim recipe (quoted on every item page)."""
    return {
        "quick": "shipped CIFAR-10 subset (5,000 / 1,000), fastnet 16-32-64-128 victims, 24 epochs, flip only "
                 "(no random crop), 10% poisoning",
        "cpu": "full CIFAR-10 (50,000 / 10,000), fastnet 32-64-128-256 victims, 16 epochs, flip only "
               "(no random crop), 1% poisoning",
        "paper": "full CIFAR-10, ResNet-18 victims, 100 epochs, pad-4 crop + flip, 1% poisoning (the paper's)",
    }[scale]
