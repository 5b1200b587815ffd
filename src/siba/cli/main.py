"""The ``siba`` command.

    siba run CONFIG            the whole pipeline from a YAML config (resumable)
    siba table CONFIG          the paper's Table I for every attack of a config, beside the paper's numbers
    siba train                 train a model (surrogate, victim, or on an exported poisoned set)
    siba trigger               make a trigger with any attack (`siba optimize` is its former name)
    siba poison                poison a training set with a trigger and export it as PNG files
    siba evaluate              clean accuracy of a model, and the attack's success with a trigger
    siba defend NAME RUN       a backdoor defense (or all) against a run's victims
    siba reproduce ITEM        a table or figure of the paper (--list; --scale quick|cpu|paper)
    siba data vggface2-subset  build the paper's face data set from a user's VGGFace2 copy
    siba list                  models, attacks, defenses and built-in data sets

A user's mistake (a missing file, an unknown name or option, a missing or out-of-range
setting) ends with one line on stderr and exit status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from ..errors import SibaError
from .data import add_parser as add_data_command
from .data import cmd_data


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit status 2.

    ``siba optimize --k 0`` prints ``siba optimize: error: argument --k: must be ≥ 1 (got 0)
    (see siba optimize --help)`` instead of the usage text followed by the error.
    """

    commands: dict[str, argparse.ArgumentParser]  # the subcommands' parsers (top-level parser only)

    def error(self, message: str) -> NoReturn:
        message = " ".join(str(message).split())  # never more than one line
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0 (got {v})")
    return v


def _pos_int(s: str) -> int:
    v = _nonneg_int(s)
    if v == 0:
        raise argparse.ArgumentTypeError("must be ≥ 1 (got 0)")
    return v


def _number(s: str) -> float:
    from ..attacks import parse_number

    try:
        return parse_number(s, "value")
    except SibaError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.03 or 8/255, got {s!r}") from None


def _kv(s: str) -> tuple[str, Any]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    import yaml

    v = v.strip()
    if "," in v and not v.startswith(("[", "{", "'", '"')):
        v = f"[{v}]"  # widths=32,64,128,256 is a list
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"cannot read the value of {s!r}") from None


def _command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return "siba " + " ".join(shlex.quote(a) for a in args)


# ----------------------------------------------------------------------------- parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu or cuda[:N] (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_data(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--data", default=None if required else "cifar10-mini", required=required,
                   help="cifar10-mini (shipped subset, default), cifar10 (official, downloaded), a CIFAR-10 "
                        "archive, or a folder with train/ and test/ image folders (or .tar.gz)")
    p.add_argument("--image-size", type=_pos_int, default=None, metavar="PX",
                   help="resize the images of an image-folder data set to PX×PX (the official CIFAR-10 "
                        "archive cannot be resized: asking for another size is an error)")


def _add_train_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training recipe (defaults: the paper's CIFAR-10 recipe)")
    g.add_argument("--epochs", type=_nonneg_int, default=100, help="epochs (default 100)")
    g.add_argument("--batch-size", type=_pos_int, default=128, help="batch size (default 128)")
    g.add_argument("--lr", type=_number, default=0.1, help="peak learning rate (default 0.1)")
    g.add_argument("--schedule", choices=["step", "onecycle", "constant"], default="step",
                   help="step: lr ÷10 at the milestones (default); onecycle: linear up then down")
    g.add_argument("--milestones", type=_pos_int, nargs="*", default=None, metavar="EPOCH",
                   help="step schedule's epochs (default: 60%% and 90%% of --epochs, i.e. 60 90 for 100)")
    g.add_argument("--weight-decay", type=_number, default=5e-4, help="default 5e-4")
    g.add_argument("--momentum", type=_number, default=0.9, help="Nesterov momentum (default 0.9)")
    g.add_argument("--label-smoothing", type=_number, default=0.0, help="default 0")
    g.add_argument("--crop-pad", type=_nonneg_int, default=4, help="random-crop padding, 0 for none (default 4)")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    g.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16, else fp32")
    g.add_argument("--seed", type=int, default=0, help="seed of the initialisation, order and augmentation")
    g.add_argument("--tta", action="store_true",
                   help="test accuracy with flip test-time augmentation (logits of the image and its mirror)")
    g.add_argument("--eval-every", type=_nonneg_int, default=1, metavar="N",
                   help="test accuracy every N epochs; 0: only after the last (default 1)")


def _add_trigger_parser(sub: Any, name: str) -> None:
    """``siba trigger`` (and ``siba optimize``, its former name: the same options)."""
    what = ("make a trigger: siba, sparse, tuap, random (and every other attack of `siba list`)" if name == "trigger"
            else "the same as `siba trigger` (its former name)")
    p = sub.add_parser(name, help=what,
                       description="Make a trigger with any attack from the training set (and a surrogate for "
                                   "siba, sparse and tuap) and write trigger.safetensors, trigger.json and "
                                   "trigger.png into --out. Defaults "
                                   "are the reference settings: k=100, eps=8/255, alpha=0.8·eps, beta=10, 200 passes, "
                                   "re-mask every 5, batch 128, target 0. An optimisation keeps its progress in "
                                   "--out/optimize-checkpoint.safetensors after every pass: the same command run "
                                   "again after an interruption continues from it (with other settings it is a "
                                   "one-line error); the file goes once the trigger is written.")
    _add_data(p)
    p.add_argument("--attack", default="siba", help="siba (default), sparse, tuap, random, badnets, blended, wanet, "
                        "ubw-p or issba (see `siba list`)")
    p.add_argument("--surrogate", default=None, help="surrogate model.safetensors (needed by siba, sparse, tuap)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--k", type=_pos_int, default=None,
                   help="L0 budget in pixels (default 100; tuap has none: it uses all H×W pixels)")
    p.add_argument("--eps", type=_number, default=None, help="L∞ budget, e.g. 8/255 (default)")
    p.add_argument("--alpha", type=_number, default=None, help="step size (default 0.8·eps)")
    p.add_argument("--beta", type=_number, default=None, help="cross-entropy clamp (default 10)")
    p.add_argument("--passes", type=_pos_int, default=None, help="passes over the data, N (default 200)")
    p.add_argument("--remask-every", type=_pos_int, default=None, help="re-select the mask every T passes (default 5)")
    p.add_argument("--batch-size", type=_pos_int, default=None, help="default 128")
    p.add_argument("--mask-rule", choices=["gradient", "projection"], default=None,
                   help="gradient: top-k of Σ|g| (reference code, default); projection: Lemma 1 on the updated δ")
    p.add_argument("--max-images", type=_pos_int, default=None, help="optimise on a seeded subset of this size")
    p.add_argument("--target", type=_nonneg_int, default=0, help="target class index (default 0)")
    p.add_argument("--all-to-all", action="store_true", help="target (y+1) mod K instead of one class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="any other attack option, e.g. size=4 for badnets (repeatable)")
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    ap = OneLineParser(prog="siba", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"siba {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    ap.commands = sub.choices

    p = sub.add_parser("run", help="run a whole experiment from a YAML config (resumes when run again)",
                       description="Surrogate → trigger → poisoned set → victim → evaluation → report.md, all in one "
                                   "run folder. Running again skips the stages whose settings are unchanged, resumes "
                                   "an interrupted training, and redoes what a changed setting touches (a new rate "
                                   "trains only new victims). See configs/ and docs/configs.md.")
    p.add_argument("config", help="YAML run config (e.g. configs/demo.yaml)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--fresh", action="store_true", help="delete the run folder's earlier results and start over")
    p.add_argument("--only", action="append", default=None, metavar="ATTACK[@RATE]",
                   help="train only these victims (repeatable, e.g. --only siba@0.01 --only badnets; `clean` for the "
                        "clean baseline); the surrogate is trained or loaded only if a selected attack needs "
                        "it, and the report lists every finished victim of the config")
    p.add_argument("--data", default=None, help="override the config's data set (a name or a path)")
    p.add_argument("--device", default=None, help="override the config's device")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="copy a stage this run lacks from a finished one of the same content key under DIR (another "
                        "run folder, a grid, runs/reproduce) instead of recomputing it; repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("table", help="the paper's Table I: every attack of a config, our numbers beside the paper's",
                       description="Run a config like `siba run` (the same stages and run folder, resumable; the "
                                   "clean model and the surrogate shared by every attack), then write RUN/table/"
                                   "table.md, table.csv and table.json — per attack BA, ASR (float and 8-bit), L0, "
                                   "L∞, LPIPS, SSIM and PSNR, with the paper's Table I (or, for a 20-class data set "
                                   "at ≥ 64 px, Table II) numbers beside ours — and figure2.png (one test image "
                                   "poisoned by every attack, with the amplified difference). See "
                                   "configs/table1-quick.yaml and configs/table1-cifar10-cpu.yaml.")
    p.add_argument("config", help="YAML run config whose attacks are the table's rows")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--fresh", action="store_true", help="delete the run folder's earlier results and start over")
    p.add_argument("--only", action="append", default=None, metavar="ATTACK[@RATE]",
                   help="run only these victims (repeatable); the table lists every finished one")
    p.add_argument("--data", default=None, help="override the config's data set (a name or a path)")
    p.add_argument("--device", default=None, help="override the config's device")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="copy a stage this run lacks from a finished one of the same content key under DIR (another "
                        "run folder, a grid, runs/reproduce) instead of recomputing it; repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("train", help="train a model and write it with its metrics",
                       description="Train a model on a data set (clean, or an exported poisoned set) and write "
                                   "model.safetensors, metrics.csv (a row per epoch), summary.json and a checkpoint "
                                   "after each epoch; --resume continues an interrupted run.")
    _add_data(p)
    p.add_argument("--model", default="fastnet", help="model name (see `siba list`; default fastnet)")
    p.add_argument("--model-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. width=32 or widths=[32,64,128,256] (repeatable)")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="start from these weights instead of a random initialisation: a torchvision-format .pth "
                        "(e.g. ImageNet ResNet-18 with --model-arg stem=imagenet) or a safetensors file; every "
                        "layer but the final linear one must fit (a one-line error names the first that does not), "
                        "and the final one loads when the class count matches. siba downloads no weights")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out (a fresh start when there is none); the run must "
                        "have the same settings, model and data as the checkpoint (else a one-line error naming the "
                        "first difference), except that a larger --epochs extends a --schedule constant run, "
                        "bit-identically to training that long from the start (step and onecycle runs cannot be "
                        "extended: their learning rate depends on --epochs)")
    p.add_argument("--fraction", type=_number, default=1.0, help="train on this class-stratified share of the data")
    _add_train_opts(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="clean accuracy of a model (and ASR/stealth with --trigger)",
                       description="Benign accuracy of a saved model on the test set; with --trigger also the attack "
                                   "success rate (float and 8-bit trigger, overall and per true class as asr_by_class) "
                                   "and L0, L∞, SSIM, PSNR of the poisoned test images. Prints JSON; --out writes "
                                   "it to a file.")
    p.add_argument("--model", required=True, help="model.safetensors written by siba train / run")
    _add_data(p)
    p.add_argument("--trigger", default=None, help="trigger.safetensors written by siba optimize / run")
    p.add_argument("--tta", action="store_true", help="also report ba_tta: BA with flip test-time augmentation")
    p.add_argument("--out", default=None, help="write the JSON here too")
    _add_common(p)

    for name in ("trigger", "optimize"):
        _add_trigger_parser(sub, name)

    p = sub.add_parser("poison", help="poison a training set with a trigger and export it as PNG files",
                       description="Attach the trigger to ⌊rate·N⌋ seeded training images and relabel them: "
                                   "all-to-one triggers pick images not of the target class and relabel them to it; "
                                   "all-to-all triggers pick images of every class and relabel class y to (y+1) mod K. "
                                   "Writes train/<class>/<index>.png, a clean test/ tree, the trigger and "
                                   "manifest.json (poisoned indices, original labels, rate, trigger hash). The folder "
                                   "is a data set for `siba train --data` or any image-folder pipeline; with "
                                   "--no-test it holds no test/ tree, so it is a training set for other pipelines "
                                   "(`siba train --data` needs both train/ and test/).")
    _add_data(p)
    p.add_argument("--trigger", required=True, help="trigger.safetensors")
    p.add_argument("--rate", type=_number, default=0.01, help="poisoning rate in (0, 1) (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of poisoned samples")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--no-test", action="store_true",
                   help="do not write the clean test/ tree (the folder is then not a data set for `siba train`)")
    _add_common(p)

    from .defend import add_parser as add_defend

    add_defend(sub, _kv, _add_common)
    add_data_command(sub)
    from .reproduce import add_parser as add_reproduce

    add_reproduce(sub)
    sub.add_parser("list", help="models, attacks, defenses and built-in data sets")
    return ap


# ----------------------------------------------------------------------------- commands


def _progress(args: argparse.Namespace) -> bool | None:
    return False if getattr(args, "quiet", False) else None


def cmd_run(args: argparse.Namespace, command: str) -> int:
    from ..experiments import load_config
    from ..experiments.pipeline import Pipeline

    cfg = load_config(args.config)
    if args.device:
        cfg.device = args.device
    if args.data:
        cfg.data = args.data
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    pipe = Pipeline(cfg, out, progress=_progress(args), command=command, reuse=args.reuse or None)
    results = pipe.run(args.fresh, args.only)
    from ..report import results_table, write_report

    write_report(out, cfg, results, pipe.marks)
    print(results_table(results["results"]))
    print(f"\nreport: {out / 'report.md'}")
    return 0


def cmd_table(args: argparse.Namespace, command: str) -> int:
    import torch

    from ..experiments import load_config
    from ..experiments.paper import PAPER_SETTINGS, PAPER_TABLES, paper_table_for
    from ..experiments.pipeline import Pipeline
    from ..report import write_report
    from ..report.table import markdown_table, write_table

    cfg = load_config(args.config)
    if args.device:
        cfg.device = args.device
    if args.data:
        cfg.data = args.data
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    pipe = Pipeline(cfg, out, progress=_progress(args), command=command, reuse=args.reuse or None)
    results = pipe.run(args.fresh, args.only)
    assert pipe.data is not None
    test = pipe.data.test
    shown = torch.nonzero(test.labels != cfg.target).flatten()
    image = test.images[int(shown[0])] if len(shown) else None
    key = paper_table_for(pipe.data.num_classes, pipe.data.image_shape[1], cfg.victim.model)
    kinds = {name: cfg.attack(name).name for name in cfg.attacks}
    name = f"Table {'I' if key.startswith('table1') else 'II'}: {PAPER_SETTINGS[key]}"
    write_report(out, cfg, results, pipe.marks)
    rows = write_table(out / "table", results, pipe.marks, kinds, image, PAPER_TABLES[key], name, test.images)
    print(markdown_table(rows, name))
    print(f"\ntable: {out / 'table' / 'table.md'}")
    return 0


def cmd_train(args: argparse.Namespace, command: str) -> int:
    import torch

    from ..data import load_dataset
    from ..models import create_model, init_from
    from ..runtime import pick_device, write_json
    from ..training import TrainConfig, train

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                      weight_decay=args.weight_decay, schedule=args.schedule, milestones=args.milestones,
                      label_smoothing=args.label_smoothing, crop_pad=args.crop_pad, flip=not args.no_flip,
                      eval_every=args.eval_every, tta=args.tta,
                      precision=args.precision, seed=args.seed)
    device = pick_device(args.device)
    data = load_dataset(args.data, args.image_size, progress=_progress(args))
    train_set = data.train.fraction(args.fraction, args.seed) if args.fraction != 1 else data.train
    torch.manual_seed(args.seed)
    model = create_model(args.model, data.num_classes, **dict(args.model_arg))
    if args.init:
        init_from(model, args.init)
    out = Path(args.out)
    res = train(model, train_set, data.test, cfg, out_dir=out, resume=args.resume, device=device,
                progress=_progress(args), eval_train_set=train_set)
    summary = dict(res.summary, data=str(args.data), command=command)
    write_json(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("test_acc", "train_acc_clean", "wall_s") if k in summary}))
    return 0


def cmd_evaluate(args: argparse.Namespace, command: str) -> int:
    from ..attacks import load_trigger
    from ..data import load_dataset
    from ..metrics import evaluate_attack
    from ..models import load_model, read_model_metadata
    from ..runtime import pick_device, setup_threads, write_json

    setup_threads()
    device = pick_device(args.device)
    read_model_metadata(args.model)  # a clear error for a missing or foreign file, before loading data
    data = load_dataset(args.data, args.image_size)
    model = load_model(args.model, device, expect_classes=data.num_classes)
    mark = load_trigger(args.trigger) if args.trigger else None
    if mark is not None:
        mark.check_fits(data.image_shape, data.num_classes)
    result = evaluate_attack(model, data.test, mark, device=device)
    if args.tta:
        from ..training import accuracy

        result["ba_tta"] = accuracy(model, data.test, device=device, tta=True)
    result.update({"model": str(args.model), "data": str(args.data), "trigger": args.trigger, "command": command})
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


def cmd_optimize(args: argparse.Namespace, command: str) -> int:
    import time

    from ..attacks import create_attack
    from ..data import load_dataset
    from ..models import load_model
    from ..runtime import pick_device, setup_threads

    setup_threads()
    device = pick_device(args.device)
    params: dict[str, Any] = {"target": args.target, "all_to_all": args.all_to_all, "seed": args.seed}
    for key in ("k", "eps", "alpha", "beta", "passes", "remask_every", "batch_size", "mask_rule", "max_images"):
        v = getattr(args, key)
        if v is not None:
            params[key] = v
    params.update(dict(args.set))
    attack = create_attack(args.attack, **params)
    data = load_dataset(args.data, args.image_size)
    attack.validate(data.image_shape, data.num_classes)
    surrogate = None
    if attack.needs_surrogate:
        if not args.surrogate:
            raise SibaError(f"the {attack.name} attack needs --surrogate MODEL (train one with `siba train`)")
        surrogate = load_model(args.surrogate, device, expect_classes=data.num_classes)
    out = Path(args.out)
    # an optimising attack keeps its progress here after every pass: the same command run again after an
    # interruption continues from it (other settings: a one-line error); it goes once the trigger is saved
    checkpoint = out / "optimize-checkpoint.safetensors"
    t0 = time.perf_counter()
    mark = attack.generate(data.train, surrogate, device=device, progress=_progress(args),
                           log=lambda s: print(s, file=sys.stderr, flush=True), checkpoint=checkpoint)
    mark.meta.update({"wall_s": round(time.perf_counter() - t0, 2), "command": command, "data": str(args.data)})
    mark.render(out / "trigger.png", data.test.images[:4])
    path = mark.save(out / "trigger")  # trigger.safetensors appears only now, when the trigger is finished
    checkpoint.unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in mark.describe().items() if k not in ("history", "params")}, indent=2))
    print(f"trigger: {path}")
    return 0


def cmd_poison(args: argparse.Namespace, command: str) -> int:
    from ..attacks import load_trigger
    from ..data import load_dataset
    from ..poisoning import check_rate, export_poisoned, poison_dataset

    check_rate(args.rate)
    mark = load_trigger(args.trigger)
    out = Path(args.out)
    finished = out.is_dir() and (out / "manifest.json").is_file()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not finished:
        raise SibaError(f"{out} exists and is not empty; choose another --out")
    data = load_dataset(args.data, args.image_size)
    mark.check_fits(data.image_shape, data.num_classes)
    poisoned = poison_dataset(data.train, mark, args.rate, seed=args.seed)
    if finished:  # the same command run again (or killed after its final rename): done already, or refused
        if not _same_export(out, poisoned, args.trigger, with_test=not args.no_test):
            raise SibaError(f"{out} exists and is not empty (it holds another poisoned set); choose another --out")
        print(f"{out} holds this poisoned set already", file=sys.stderr)
    else:
        export_poisoned(poisoned, out, trigger_file=args.trigger, test_set=None if args.no_test else data.test,
                        progress=_progress(args))
    print(json.dumps({"out": str(out), "num_images": len(poisoned.data), "num_poisoned": int(poisoned.indices.numel()),
                      "rate": args.rate, "target_rule": mark.target_rule, "target": mark.target}))
    return 0


def _same_export(out: Path, poisoned: Any, trigger_file: str, with_test: bool) -> bool:
    """Whether ``out`` is a finished export of ``poisoned`` made with the trigger file ``trigger_file``."""
    from ..attacks.trigger import trigger_paths
    from ..poisoning.poison import read_manifest
    from ..runtime import file_sha256

    try:
        manifest = read_manifest(out)
    except SibaError:
        return False
    want = poisoned.manifest()
    return (all(manifest.get(k) == v for k, v in want.items())
            and (manifest.get("trigger") or {}).get("sha256") == file_sha256(trigger_paths(trigger_file)[0])
            and (manifest.get("test") is not None) == with_test)


def _cmd_defend(args: argparse.Namespace, command: str) -> int:
    from .defend import cmd_defend

    return cmd_defend(args, command)


def cmd_list(args: argparse.Namespace, command: str) -> int:
    from ..attacks import list_attacks
    from ..data import BUILTIN
    from ..defenses import list_defenses
    from ..models import list_models

    for title, items in (("models", list_models()), ("attacks", list_attacks()), ("defenses", list_defenses()),
                         ("data sets", BUILTIN)):
        print(f"{title}:")
        for k, v in items.items():
            print(f"  {k:14s} {v}")
    return 0


def _cmd_reproduce(args: argparse.Namespace, command: str) -> int:
    from .reproduce import cmd_reproduce

    return cmd_reproduce(args, command)


COMMANDS = {"run": cmd_run, "table": cmd_table, "train": cmd_train, "evaluate": cmd_evaluate, "trigger": cmd_optimize,
            "optimize": cmd_optimize, "poison": cmd_poison, "defend": _cmd_defend, "list": cmd_list,
            "data": cmd_data, "reproduce": _cmd_reproduce}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # blamed on the subcommand, whose --help lists its options
        parser.commands.get(args.command or "", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args, _command_line(argv))
    except SibaError as exc:
        print(f"siba: error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("siba: interrupted (run the same command again to resume where it stopped)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
