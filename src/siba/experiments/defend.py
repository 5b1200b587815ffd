"""Defenses against what a run folder saved: the victims, their triggers, the poisoned training sets.

:func:`defend_run` is what ``siba defend NAME RUN`` and ``siba reproduce``'s defense items share:
for each finished victim it loads the model and trigger, rebuilds the poisoned training set from
the run's seed (checked against the victim's ``poison.json``), draws a clean validation subset
from the training set (never the test set), and runs each defense into
``<out>/<defense>/<victim>/``. A finished result with the same settings and trigger is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import SibaError
from ..runtime import machine_info, pick_device, read_json, setup_threads, write_json


def finished_victims(run: Path, wanted: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
    """``(folder name, attack, rate)`` of the victims to defend, each finished (``eval.json``);
    ``wanted``: ``ATTACK@RATE`` selections (default: every finished victim)."""
    finished = sorted(p.parent.name for p in (run / "victims").glob("*/eval.json"))
    if not wanted:
        if not finished:
            raise SibaError(f"{run} has no finished victim to defend (run `siba run` first)")
        wanted_folders = finished
    else:
        wanted_folders = []
        for item in wanted:
            attack, sep, rate = item.partition("@")
            if not sep:
                raise SibaError(f"--victim {item}: expected ATTACK@RATE, e.g. badnets@0.01")
            try:
                folder = f"{attack}-r{float(rate):g}"
            except ValueError:
                raise SibaError(f"--victim {item}: {rate!r} is not a rate") from None
            if folder not in finished:
                raise SibaError(f"{run} has no finished victim {item} (finished: {', '.join(finished) or 'none'})")
            wanted_folders.append(folder)
    out = []
    for folder in wanted_folders:
        row = read_json(run / "victims" / folder / "eval.json")
        out.append((folder, row["attack"], float(row["rate"])))
    return out


def result_is_current(out: Path, defense: Any, fingerprint: str | None) -> bool:
    """Whether ``out`` holds a finished result of ``defense``'s settings against this trigger."""
    res = out / "result.json"
    if not res.is_file():
        return False
    old = read_json(res)
    return old.get("settings") == json.loads(json.dumps(defense.params())) and \
        (old.get("trigger") or {}).get("fingerprint") == fingerprint


def run_inputs(run: str | Path, victims: Sequence[str] | None = None, *, data: str | None = None,
               val_size: int = 1000, device: Any = "auto") -> list[tuple[str, Any]]:
    """``(victim folder, DefenseInput)`` for each finished victim of ``run`` (checked, one-line errors)."""
    from ..attacks import load_trigger
    from ..data import DataSplits, load_dataset
    from ..defenses import DefenseInput
    from ..models import load_model
    from ..poisoning import poison_dataset

    run = Path(run)
    if not (run / "config.json").is_file():
        raise SibaError(f"{run} is not a siba run folder (no config.json)")
    cfg = read_json(run / "config.json")["config"]
    chosen = finished_victims(run, victims)
    device = pick_device(device) if isinstance(device, str) else device
    dataset = load_dataset(data or cfg["data"], cfg.get("image_size"))
    seed = int(cfg.get("seed", 0))
    fraction = float(cfg.get("train_fraction", 1))
    if fraction < 1:  # the run trained on this subset of the training set (as the pipeline draws it)
        dataset = DataSplits(dataset.train.fraction(fraction, seed), dataset.test, dataset.name)
    jobs = []
    for folder, attack, rate in chosen:
        vdir = run / "victims" / folder
        mark = load_trigger(run / "triggers" / attack / "trigger.safetensors")
        stage = read_json(vdir / "stage.json")
        if stage.get("settings", {}).get("trigger") not in (None, mark.fingerprint()):
            raise SibaError(f"the trigger of {attack} changed since victim {folder} was trained; run the config "
                            "again to retrain it")
        model = load_model(vdir / "model.safetensors", device, expect_classes=dataset.num_classes)
        poisoned = poison_dataset(dataset.train, mark, rate, seed=seed)
        if poisoned.indices.tolist() != read_json(vdir / "poison.json").get("poisoned_indices"):
            raise SibaError(f"the poisoned set rebuilt for {folder} is not the one its victim was trained on "
                            "(another data set?)")
        jobs.append((folder, DefenseInput.from_poisoned(model, dataset.test, poisoned, val_size=val_size,
                                                        seed=seed, device=device)))
    return jobs


def run_defenses(jobs: Sequence[tuple[str, Any]], defenses: dict[str, Any], root: str | Path, *,
                 progress: bool | None = None, log: Callable[[str], None] = print,
                 command: str | None = None) -> list[Path]:
    """Run every defense against every ``(victim, DefenseInput)`` into ``root/<defense>/<victim>/``;
    finished results are kept. Returns the result folders (those skipped as not applicable left out).
    Each new ``result.json`` also names the ``command`` that made it and the machine it ran on."""
    root = Path(root)
    done = []
    for victim, inputs in jobs:
        for name, defense in defenses.items():
            out = root / name / victim
            fingerprint = inputs.trigger.fingerprint() if inputs.trigger is not None else None
            if result_is_current(out, defense, fingerprint):
                log(f"[{name} / {victim}] done already: {out}")
                done.append(out)
                continue
            if defense.kind == "training" and inputs.poisoned_train is None:
                log(f"[{name} / {victim}] skipped: a training-time defense needs the poisoned training set "
                    "(a run folder)")
                continue
            if getattr(defense, "needs_trigger", False) and inputs.trigger is None:
                log(f"[{name} / {victim}] skipped: it needs the attack's trigger (--trigger)")
                continue
            log(f"[{name} / {victim}] running")
            defense.run(inputs, out, progress=progress, log=lambda s, n=name, v=victim: log(f"[{n} / {v}] {s}"))
            _stamp(out / "result.json", command, inputs.device)
            done.append(out)
    return done


def _stamp(result: Path, command: str | None, device: Any) -> None:
    """Add the command and the machine to a defense's ``result.json``."""
    if result.is_file():
        write_json(result, {**read_json(result), "command": command, "machine": machine_info(device)})


def defend_run(run: str | Path, defenses: dict[str, Any], root: str | Path | None = None, *,
               victims: Sequence[str] | None = None, data: str | None = None, val_size: int = 1000,
               device: Any = "auto", progress: bool | None = None,
               log: Callable[[str], None] = print, command: str | None = None) -> list[Path]:
    """The defenses against a run folder's finished victims (default output: ``RUN/defenses``)."""
    setup_threads()
    jobs = run_inputs(run, victims, data=data, val_size=val_size, device=device)
    return run_defenses(jobs, defenses, Path(root) if root else Path(run) / "defenses", progress=progress, log=log,
                        command=command)
