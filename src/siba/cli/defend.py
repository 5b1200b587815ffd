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


def cmd_defend(args: argparse.Namespace, command: str) -> int:
    from ..attacks import load_trigger
    from ..data import load_dataset
    from ..defenses import DefenseInput, clean_validation_subset
    from ..experiments.defend import run_defenses, run_inputs
    from ..models import load_model
    from ..report.defenses import write_summary
    from ..runtime import pick_device, setup_threads

    setup_threads()
    device = pick_device(args.device)
    progress = False if args.quiet else None
    defenses = _defenses(args.name, dict(args.set))
    if args.run:
        run = Path(args.run)
        jobs = run_inputs(run, args.victim, data=args.data, val_size=args.val_size, device=device)
        root = Path(args.out) if args.out else run / "defenses"
    else:
        if not args.model or not args.data:
            raise SibaError("name a run folder, or --model and --data (and --trigger when known)")
        data = load_dataset(args.data)
        model = load_model(args.model, device, expect_classes=data.num_classes)
        mark = load_trigger(args.trigger) if args.trigger else None
        val = clean_validation_subset(data.train, None, args.val_size, 0)
        root = Path(args.out) if args.out else Path("defenses")
        jobs = [(Path(args.model).parent.name or "model", DefenseInput(model, data.test, mark, val, device=device))]
    run_defenses(jobs, defenses, root, progress=progress, log=lambda s: print(s, file=sys.stderr), command=command)
    rows = write_summary(root)
    print((root / "summary.md").read_text())
    print(f"summary: {root / 'summary.md'} ({len(rows)} results)")
    return 0
