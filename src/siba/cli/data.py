"""``siba data …``: build data sets from sources the user provides.

``siba data vggface2-subset SRC OUT`` builds the paper's Table II data set (20 VGGFace2
identities, 400 training and 100 test images each, 128×128) from a copy of VGGFace2 that the
user obtained; siba downloads nothing. See :mod:`siba.data.vggface2` and docs/vggface2.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

VGGFACE2_HELP = (
    "Build the VGGFace2 subset of the paper's Table II as an image-folder data set: a seeded choice of "
    "--identities identities among those with at least --train-per-class + --test-per-class images, and for "
    "each a seeded, disjoint choice of training and test images, every image center-cropped to a square and "
    "resized to --size × --size with Pillow's bicubic filter, written as OUT/train/<identity>/<index>.png and "
    "OUT/test/<identity>/<index>.png (lossless PNG) with OUT/manifest.json (settings, the identities, and for "
    "each file its source and SHA-256). OUT is a data set for `siba train --data OUT` and for configs' "
    "`data: OUT`. VGGFace2 is not downloadable here: obtain it yourself under its license (siba downloads "
    "nothing). SRC is either VGGFace2's folder holding train/ (identities are then drawn from train/ only; "
    "pass SRC/test to draw from the test identities) or a folder of identity folders (n000002/*.jpg, …). "
    "Unreadable images are skipped (the next image of the identity's shuffled order takes their place) and "
    "reported in one warning and in the manifest. The same SRC, seed and settings give byte-identical files. "
    "The tree is built in a hidden sibling folder and renamed at the end: an interrupted build leaves no OUT.")


def add_parser(sub: Any) -> None:
    """Add ``siba data`` (and its sub-commands) to the top-level sub-parsers ``sub``."""
    p = sub.add_parser("data", help="build a data set from a source you provide (the paper's VGGFace2 subset)",
                       description="Build data sets from sources that you provide; siba downloads nothing here.")
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT")
    dsub.required = True
    q = dsub.add_parser("vggface2-subset", help="the paper's Table II subset of VGGFace2 (20 identities, 128×128)",
                        description=VGGFACE2_HELP)
    q.add_argument("src", metavar="SRC", help="your VGGFace2 folder (holding train/) or a folder of identity folders")
    q.add_argument("out", metavar="OUT", help="output folder (must not exist or be empty)")
    q.add_argument("--identities", type=int, default=20, metavar="N",
                   help="identities (classes) to draw (default 20)")
    q.add_argument("--train-per-class", type=int, default=400, metavar="N",
                   help="training images per identity (default 400)")
    q.add_argument("--test-per-class", type=int, default=100, metavar="N",
                   help="test images per identity (default 100)")
    q.add_argument("--size", type=int, default=128, metavar="PX", help="output images are PX×PX (default 128)")
    q.add_argument("--seed", type=int, default=0, help="seed of the identities' and the images' choice (default 0)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_data(args: argparse.Namespace, command: str) -> int:
    """The handler of ``siba data``: dispatch on the sub-command."""
    if args.data_command == "vggface2-subset":
        return _vggface2_subset(args, command)
    raise AssertionError(args.data_command)  # pragma: no cover - argparse allows no other


def _vggface2_subset(args: argparse.Namespace, command: str) -> int:
    from ..data.vggface2 import build_vggface2_subset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = build_vggface2_subset(args.src, args.out, identities=args.identities,
                                         train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                                         size=args.size, seed=args.seed, progress=False if args.quiet else None,
                                         command=command)
    for w in caught:
        print(f"siba: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    s = manifest["settings"]
    print(json.dumps({"out": str(args.out), "identities": len(manifest["identities"]),
                      "train": len(manifest["identities"]) * s["train_per_class"],
                      "test": len(manifest["identities"]) * s["test_per_class"], "size": s["size"],
                      "skipped_files": len(manifest["skipped_files"])}))
    return 0
