"""``siba defend NAME RUN [--victim ATTACK@RATE]``: the defenses against what a run saved.

Every defense consumes what ``siba run`` (or ``siba table``) already saved — a victim model, its
trigger, the poisoned training set (rebuilt from the run's seed and checked against the victim's
``poison.json``), the clean test set — or a model, a data set and a trigger that a user names
(``--model``, ``--data``, ``--trigger``), so that a defense runs against any model. Results go to
``<out>/<defense>/<victim>/`` (``result.json`` and figures), and ``<out>/summary.{md,json}``
collects every result there. A finished result with the same settings and trigger is kept, so
the same command again resumes a long ``defend all``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import SibaError


def add_parser(sub: Any, kv: Callable[[str], tuple[str, Any]],
               common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("defend", help="run a backdoor defense (or all) against a run's victims or a named model",
                       description=__doc__.split("\n\n")[1].replace("\n", " ") + " Defenses: `siba list`.")
    p.add_argument("name", help="a defense (neural-cleanse, strip, scale-up, fine-pruning, grad-cam, abl) or all")
    p.add_argument("run", nargs="?", default=None, help="a run folder made by siba run or siba table")
    p.add_argument("--victim", action="append", default=None, metavar="ATTACK@RATE",
                   help="the victims to defend (repeatable, e.g. badnets@0.01); default: every finished one")
    p.add_argument("--model", default=None, help="without a run folder: the model.safetensors to defend")
    p.add_argument("--data", default=None, help="the data set (default: the run's); without a run: required")
    p.add_argument("--trigger", default=None, help="without a run folder: the attack's trigger, when known")
    p.add_argument("--set", type=kv, action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the defense (one defense only), e.g. n=20 for strip (repeatable)")
    p.add_argument("--val-size", type=int, default=1000,
                   help="clean validation images drawn from the training set (never the test set; default 1000)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/defenses, or ./defenses)")
    common(p)


def _defenses(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    from ..defenses import DEFENSES, create_defense

    if name == "all":
        if settings:
            raise SibaError("--set applies to one defense; name it instead of `all`")
        return {n: create_defense(n) for n in sorted(DEFENSES)}
    return {name: create_defense(name, **settings)}


def _victims(run: Path, wanted: list[str] | None) -> list[tuple[str, str, float]]:
    """``(folder name, attack, rate)`` of the victims to defend, each finished (``eval.json``)."""
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
        row = json.loads((run / "victims" / folder / "eval.json").read_text())
        out.append((folder, row["attack"], float(row["rate"])))
    return out


def _done(out: Path, defense: Any, fingerprint: str | None) -> bool:
    res = out / "result.json"
    if not res.is_file():
        return False
    old = json.loads(res.read_text())
    return old.get("settings") == json.loads(json.dumps(defense.params())) and \
        (old.get("trigger") or {}).get("fingerprint") == fingerprint


def cmd_defend(args: argparse.Namespace, command: str) -> int:
    from ..attacks import load_trigger
    from ..data import load_dataset
    from ..defenses import DefenseInput, clean_validation_subset
    from ..models import load_model
    from ..poisoning import poison_dataset
    from ..report.defenses import write_summary
    from ..runtime import pick_device, read_json, setup_threads

    setup_threads()
    device = pick_device(args.device)
    progress = False if args.quiet else None
    defenses = _defenses(args.name, dict(args.set))
    jobs: list[tuple[str, DefenseInput]] = []
    if args.run:
        run = Path(args.run)
        if not (run / "config.json").is_file():
            raise SibaError(f"{run} is not a siba run folder (no config.json)")
        cfg = read_json(run / "config.json")["config"]
        victims = _victims(run, args.victim)
        data = load_dataset(args.data or cfg["data"], cfg.get("image_size"))
        root = Path(args.out) if args.out else run / "defenses"
        for folder, attack, rate in victims:
            vdir = run / "victims" / folder
            mark = load_trigger(run / "triggers" / attack / "trigger.safetensors")
            stage = read_json(vdir / "stage.json")
            if stage.get("settings", {}).get("trigger") not in (None, mark.fingerprint()):
                raise SibaError(f"the trigger of {attack} changed since victim {folder} was trained; run the config "
                                "again to retrain it")
            model = load_model(vdir / "model.safetensors", device, expect_classes=data.num_classes)
            poisoned = poison_dataset(data.train, mark, rate, seed=int(cfg.get("seed", 0)))
            if poisoned.indices.tolist() != read_json(vdir / "poison.json").get("poisoned_indices"):
                raise SibaError(f"the poisoned set rebuilt for {folder} is not the one its victim was trained on "
                                "(another data set?)")
            jobs.append((folder, DefenseInput.from_poisoned(model, data.test, poisoned, val_size=args.val_size,
                                                            seed=int(cfg.get("seed", 0)), device=device)))
    else:
        if not args.model or not args.data:
            raise SibaError("name a run folder, or --model and --data (and --trigger when known)")
        data = load_dataset(args.data)
        model = load_model(args.model, device, expect_classes=data.num_classes)
        mark = load_trigger(args.trigger) if args.trigger else None
        val = clean_validation_subset(data.train, None, args.val_size, 0)
        root = Path(args.out) if args.out else Path("defenses")
        jobs.append((Path(args.model).parent.name or "model",
                     DefenseInput(model, data.test, mark, val, device=device)))
    for victim, inputs in jobs:
        for name, defense in defenses.items():
            out = root / name / victim
            fingerprint = inputs.trigger.fingerprint() if inputs.trigger is not None else None
            if _done(out, defense, fingerprint):
                print(f"[{name} / {victim}] done already: {out}", file=sys.stderr)
                continue
            if defense.kind == "training" and inputs.poisoned_train is None:
                print(f"[{name} / {victim}] skipped: a training-time defense needs the poisoned training set "
                      "(a run folder)", file=sys.stderr)
                continue
            if getattr(defense, "needs_trigger", False) and inputs.trigger is None:
                print(f"[{name} / {victim}] skipped: it needs the attack's trigger (--trigger)", file=sys.stderr)
                continue
            print(f"[{name} / {victim}] running", file=sys.stderr)
            defense.run(inputs, out, progress=progress, log=lambda s, n=name, v=victim: print(
                f"[{n} / {v}] {s}", file=sys.stderr))
    rows = write_summary(root)
    print((root / "summary.md").read_text())
    print(f"summary: {root / 'summary.md'} ({len(rows)} results)")
    return 0
