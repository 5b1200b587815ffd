"""``siba reproduce ITEM… [--scale quick|cpu|paper]``: the paper's tables and figures, one command each.

Each item (a table or figure of the paper, `siba reproduce --list`) runs its grid of runs through the
same resumable pipeline as `siba run` (into RUNS/<item>/<scale>/, shared surrogates and triggers
reused), runs its defense where it is one, and writes RESULTS/<item>/<scale>/: item.md (our numbers
beside the paper's where our copy of the paper kept them, the recipe, the command, the machine, the
git revision, the wall time), data.json and its figures. Scales: quick (the shipped CIFAR-10 subset,
minutes an item on a 2-core CPU), cpu (the full CIFAR-10, hours), paper (the paper's ResNet-18
settings, for a GPU). quick and cpu victims train without the random crop (flip only). The same
command again resumes; --executor ray spreads the victims over a Ray cluster (docs/grid.md).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="the paper's tables and figures, one command each (--list shows them)",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("items", nargs="*", metavar="ITEM", help="paper items (table1, figure4, …) or all")
    p.add_argument("--list", action="store_true", help="list the items with their scales and estimated costs")
    p.add_argument("--scale", default="quick", help="quick (default), cpu or paper")
    p.add_argument("--data", default=None,
                   help="the data set (default: the scale's: cifar10-mini, ../shared/datasets/cifar10-jpeg, cifar10)")
    p.add_argument("--seeds", type=int, default=1, help="repeat every run with seeds 0..N-1; mean ± std (default 1)")
    p.add_argument("--executor", default="serial", help="serial (default) or ray: one Ray task per victim")
    p.add_argument("--address", default=None,
                   help="the Ray cluster (default: Ray's own convention, RAY_ADDRESS, else a local instance)")
    p.add_argument("--results", default="results/reproduce", help="where items write (default results/reproduce)")
    p.add_argument("--runs", default="runs/reproduce", help="where their run folders go (default runs/reproduce)")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="also copy finished stages of the same content key from this folder (e.g. a `siba table` "
                        "run such as runs/table1-cifar10-cpu) instead of recomputing them; repeatable. Those of "
                        "every item under --runs are always shared")
    p.add_argument("--init", action="append", default=[], metavar="MODEL=FILE",
                   help="start every surrogate and victim of MODEL from these weights (a torchvision-format .pth "
                        "or safetensors file you have; siba downloads nothing), e.g. --init "
                        "resnet18=resnet18-f37072fd.pth --init vgg16=vgg16_bn-6c64b313.pth for table2 at paper "
                        "scale, which needs them; repeatable")
    p.add_argument("--rejudge", action="store_true",
                   help="run nothing: judge the committed pages of ITEM… at --scale against the paper again from "
                        "their data.json (after a rule or a why in siba/reproduce/versus.py or items.py changed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_reproduce(args: argparse.Namespace, command: str) -> int:
    from ..experiments.pipeline import StagePool
    from ..reproduce import check_request, item_table, parse_init, rejudge, run_item

    if args.list:
        print(item_table())
        return 0
    items = check_request(args.items, args.scale, args.seeds, args.executor, args.data,
                          log=lambda s: print(s, file=sys.stderr))
    if args.rejudge:
        for item in items:
            said = {None: "no committed page", False: "unchanged", True: "judged again"}[
                rejudge(item, args.scale, args.results)] if item.versus else "no claim to judge"
            print(f"{item.name} ({args.scale}): {said}")
        return 0
    init = parse_init(args.init)
    for item in items:  # every plan built (and so every config checked) before any work starts
        item.plan(args.scale, args.data, list(range(args.seeds)), init)
    StagePool(args.reuse)  # every --reuse folder exists
    for item in items:
        run_item(item, args.scale, results_root=args.results, runs_root=args.runs, data=args.data, seeds=args.seeds,
                 executor=args.executor, address=args.address, progress=False if args.quiet else None,
                 command=command, log=lambda s: print(s, file=sys.stderr), reuse=args.reuse, init=init)
    return 0
