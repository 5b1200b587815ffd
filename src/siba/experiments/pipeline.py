"""``siba run``: data set → surrogate → trigger → poisoned set → victim → evaluation → report.

Every stage writes its artifacts into one folder of the run folder, with a ``stage.json``
holding a digest of what it depends on: its own settings and the *content* of what it
consumed — the data (the fingerprints of the training and test images and labels, not the
path they were read from), the surrogate's weights (for a trigger), the trigger's tensors
(for a victim), and ``precision: auto`` as the precision it resolved to on this machine.
Running again skips a finished stage whose digest is unchanged, resumes a training in
progress, and redoes a stage whose digest changed (and so everything downstream of it):
adding a rate to a config trains only the new victims; changing the victim recipe keeps the
surrogate and the triggers; a trigger file replaced by hand retrains its victims; a run moved
to a machine where ``auto`` means another precision redoes the stages it changes. With
``reuse`` (``--reuse DIR``), a stage this run lacks is copied from any finished stage of the
same content key found under those folders (another run, a grid, a paper item), whatever its
name there: the key names everything the result depends on, so the copy is the result this
run would have computed (a victim's ``eval.json`` is renamed to this run's attack name). A run
folder made by a siba whose stages were keyed to settings alone is refused with one line::

    RUN/config.json                  the checked config of the latest run
    RUN/surrogate/                   model.safetensors, metrics.csv, summary.json
    RUN/clean/                       the victim recipe on clean data (clean BA)
    RUN/triggers/<attack>/           trigger.safetensors, trigger.json, trigger.png, timing.json
    RUN/victims/<attack>-r<rate>/    poison.json, model, metrics.csv, eval.json [, poisoned/ PNG tree]
    RUN/results.json                 (and RUN/report.md, written by siba run through siba.report)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..attacks import Trigger, load_trigger
from ..data import DataSplits, ImageSet, load_dataset
from ..errors import SibaError
from ..metrics import evaluate_attack
from ..models import check_model_file, create_model, init_from, load_model, weights_fingerprint
from ..poisoning import export_poisoned, poison_dataset, select_poison_indices
from ..runtime import file_sha256, pick_device, read_json, resolve_precision, setup_threads, write_json
from ..training import accuracy, predict, train
from .config import ModelStage, RunConfig


STAGE_FORMAT = 2  # 2: stages keyed to the content they consumed (1: to the settings alone)
MODEL_DONE = ("summary.json", "model.safetensors")  # what a finished stage holds, by kind
TRIGGER_DONE = ("trigger.safetensors",)
VICTIM_DONE = ("eval.json", "model.safetensors")
_COPYING = ".reusing"  # the hidden suffix of a stage being copied in from a donor


def copy_stage(src: Path, dest: Path, tag: str) -> None:
    """Copy stage folder ``src`` to ``dest`` under the hidden name ``.<dest>TAG``, then rename it into
    place: a killed copy leaves no half stage (and the next copy clears what it left)."""
    tmp = dest.parent / f".{dest.name}{tag}"
    if tmp.exists():
        shutil.rmtree(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp)
    tmp.rename(dest)


def stage_finished(folder: Path, done: Sequence[str]) -> bool:
    """Whether ``folder`` is a stage (it has a ``stage.json``) holding every file of ``done``."""
    return (folder / "stage.json").is_file() and all((folder / f).is_file() for f in done)


class StagePool:
    """The finished stages under some folders, found by content key: what ``--reuse DIR`` offers.

    A stage is a folder holding a ``stage.json`` of this siba's format (its digest names
    everything its result depends on). The folders are walked lazily and again on every miss
    (so stages finished meanwhile, by this process or another, are found); a stage folder's
    contents, hidden folders and exported PNG trees are not descended into.
    """

    def __init__(self, roots: Sequence[str | Path]) -> None:
        self.roots = [Path(r) for r in roots]
        for root in self.roots:
            if not root.is_dir():
                raise SibaError(f"--reuse {root}: no such folder")
        self._digests: dict[tuple[Path, int], str | None] = {}  # by (folder, stage.json's mtime)

    def _walk(self) -> list[Path]:
        found = []
        for root in self.roots:
            for here, dirs, files in os.walk(root):
                if "stage.json" in files:
                    found.append(Path(here))
                    dirs[:] = []
                    continue
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "poisoned")
        return found

    def _digest_of(self, folder: Path) -> str | None:
        try:  # keyed to the file's mtime too: a stage redone in place under other settings is read again
            key = (folder, (folder / "stage.json").stat().st_mtime_ns)
            if key not in self._digests:
                stage = read_json(folder / "stage.json")
                self._digests[key] = stage.get("digest") if stage.get("format") == STAGE_FORMAT else None
        except (OSError, ValueError, SibaError):
            return None  # gone, or being written by another process: looked at again on the next miss
        return self._digests[key]

    def find(self, digest: str, done: Sequence[str], exclude: Path) -> Path | None:
        """A finished stage folder (all of ``done`` present) with ``digest``, other than ``exclude``."""
        skip = exclude.resolve()
        for folder in self._walk():
            if self._digest_of(folder) == digest and folder.resolve() != skip and stage_finished(folder, done):
                return folder
        return None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rate_tag(rate: float) -> str:
    return f"r{rate:g}"


def victim_dir(run_dir: str | Path, name: str, rate: float) -> Path:
    """The folder of the victim poisoned by attack ``name`` at ``rate`` in a run folder."""
    return Path(run_dir) / "victims" / f"{name}-{rate_tag(rate)}"


class Pipeline:
    """Runs one :class:`RunConfig` into ``out_dir``; each stage is a method."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path, *, progress: bool | None = None,
                 log: Callable[[str], None] = _say, command: str | None = None,
                 reuse: Sequence[str | Path] | StagePool | None = None) -> None:
        self.cfg = cfg
        self.pool = reuse if isinstance(reuse, StagePool) or reuse is None else StagePool(reuse)
        self.out = Path(out_dir)
        self.progress = progress
        self.log = log
        self.command = command
        self.device = pick_device(cfg.device)
        self.data: DataSplits | None = None
        self.surrogate_digest: str | None = None
        self.trigger_digests: dict[str, str] = {}
        self.marks: dict[str, Trigger] = {}  # the triggers of the latest run(), by attack name
        self._init_hashes: dict[str, str] = {}  # init weights file → its SHA-256

    # ------------------------------------------------------------------ checks
    def _stage(self, folder: Path, settings: dict[str, Any], label: str, done: Sequence[str] = ()) -> str:
        """Make ``folder`` hold the results of ``settings`` (or nothing yet); returns their digest.

        A folder left by other settings is cleared, so its stage is redone. A stage missing here
        is copied from the reuse pool when it holds a finished one (``done``: its files) of the
        same digest.
        """
        digest = _digest(settings)
        if folder.exists():
            if self._matches(folder, settings):
                return digest
            self.log(f"[{label}] settings changed since the last run: redoing it")
            shutil.rmtree(folder)
        if done and self.pool is not None:
            donor = self.pool.find(digest, done, folder)
            if donor is not None:
                copy_stage(donor, folder, _COPYING)
                self.log(f"[{label}] reused from {donor} (the same content key)")
                return digest
        folder.mkdir(parents=True)
        write_json(folder / "stage.json", {"format": STAGE_FORMAT, "digest": digest, "settings": settings,
                                           "data_source": self.cfg.data})
        return digest

    def _matches(self, folder: Path, settings: dict[str, Any]) -> bool:
        """Whether ``folder`` holds the results of ``settings`` (finished or not)."""
        marker = folder / "stage.json"
        if not marker.is_file():
            return False
        stage = read_json(marker)
        return stage.get("format") == STAGE_FORMAT and stage.get("digest") == _digest(settings)

    def _victim_settings(self, name: str, rate: float) -> dict[str, Any]:
        return {**self._data_key(), "trigger": self.trigger_digests[name], "rate": rate,
                "victim": self._stage_key(self.cfg.victim),
                "precision": self._precision(self.cfg.victim.train.precision)}

    def _stage_key(self, stage: ModelStage) -> dict[str, Any]:
        """A model stage's settings as its digest sees them: the weights it starts from by their content
        (not their path), and no ``init`` at all when it has none (the digests of older runs stay)."""
        key = asdict(stage)
        init = key.pop("init", None)
        if init is not None:
            if init not in self._init_hashes:
                self._init_hashes[init] = file_sha256(init)
            key["init"] = {"sha256": self._init_hashes[init]}
        return key

    def _trigger_settings(self, name: str) -> dict[str, Any]:
        attack = self.cfg.attack(name)
        precision = getattr(attack, "precision", None)
        return {**self._data_key(), "attack": type(attack).name, "params": attack.params(),
                "surrogate": self.surrogate_digest if attack.needs_surrogate else None,
                "precision": self._precision(precision) if attack.needs_surrogate and precision else None}

    def _clean_settings(self) -> dict[str, Any]:
        return {**self._data_key(), "victim": self._stage_key(self.cfg.victim),
                "precision": self._precision(self.cfg.victim.train.precision)}

    def _surrogate_settings(self) -> dict[str, Any]:
        return {**self._data_key(), "surrogate": self._stage_key(self.cfg.surrogate),
                "precision": self._precision(self.cfg.surrogate.train.precision)}

    def _precision(self, precision: str) -> str:
        """``auto`` as what it means on this machine (``bf16`` or ``fp32``)."""
        return resolve_precision(precision, self.device)

    def _data_key(self) -> dict[str, Any]:
        """The data's content (not its path) and the run's seed."""
        assert self.data is not None, "prepare() loads the data first"
        return {"data": {"train": self.data.train.fingerprint(), "test": self.data.test.fingerprint()},
                "seed": self.cfg.seed}

    def prepare(self, fresh: bool = False, need_surrogate: bool = True) -> DataSplits:
        """Load the data and check every setting against it; only then touch the run folder.

        ``need_surrogate=False`` (an ``--only`` selection that makes no surrogate-based trigger)
        leaves ``surrogate.path`` unchecked: such a run neither loads nor trains the surrogate.
        """
        setup_threads()
        cfg = self.cfg
        data = load_dataset(cfg.data, cfg.image_size, progress=self.progress)
        if cfg.train_fraction < 1:  # every stage sees the same subset; the stage digests key its content
            data = DataSplits(data.train.fraction(cfg.train_fraction, cfg.seed), data.test, data.name)
        for name in cfg.attacks:
            attack = cfg.attack(name)
            attack.validate(data.image_shape, data.num_classes)
            probe = _ProbeTrigger(data.num_classes, attack.target, attack.target_rule)
            for rate in cfg.rates:
                select_poison_indices(data.train.labels, probe, rate, cfg.seed)
        stages = [("surrogate", cfg.surrogate)] if need_surrogate else []
        for label, stage in [*stages, ("victim", cfg.victim)]:
            if stage.path is None:
                continue
            if not Path(stage.path).is_file():
                raise SibaError(f"{label}.path does not exist: {stage.path}")
            try:
                check_model_file(stage.path, stage.model, stage.model_args, data.num_classes)
            except SibaError as exc:
                raise SibaError(f"{label}.path: {exc}") from None
        for label, stage in [*stages, ("victim", cfg.victim)]:
            if stage.init is None:
                continue
            if not Path(stage.init).is_file():
                raise SibaError(f"{label}.init does not exist: {stage.init} (siba downloads no weights: name a "
                                "file you have, e.g. torchvision's resnet18-f37072fd.pth)")
            try:  # the weights must fit the model now, not after the data and the surrogate are done
                init_from(create_model(stage.model, data.num_classes, **stage.model_args), stage.init)
            except SibaError as exc:
                raise SibaError(f"{label}.init: {exc}") from None
        marker = self.out / "config.json"
        if marker.is_file():
            if fresh:
                shutil.rmtree(self.out)
            elif read_json(marker).get("format") != STAGE_FORMAT:
                raise SibaError(f"{self.out} was made by an older siba, whose stages were keyed to settings alone, "
                                "not to the data, surrogate and trigger they consumed; run again with --fresh to "
                                "redo it, or choose another --out")
        elif self.out.exists() and any(self.out.iterdir()):
            raise SibaError(f"{self.out} exists and is not a siba run folder; choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"format": STAGE_FORMAT, "config": cfg.to_dict(), "command": self.command})
        self.data = data
        return data

    # ------------------------------------------------------------------ stages
    def _train_stage(self, stage: ModelStage, train_set: ImageSet, out: Path, label: str,
                     callback: Callable | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
        """Train (or resume, or reuse) the model of ``stage`` in ``out``; ``out`` is a checked stage folder."""
        assert self.data is not None
        if (out / "summary.json").is_file() and (out / "model.safetensors").is_file():
            self.log(f"[{label}] done already: {out}")
            return load_model(out / "model.safetensors", self.device), read_json(out / "summary.json")
        torch.manual_seed(stage.train.seed)
        model = create_model(stage.model, self.data.num_classes, **stage.model_args)
        if stage.init is not None:
            loaded = init_from(model, stage.init)
            self.log(f"[{label}] starting from {stage.init} ({loaded['loaded']} tensors; fresh: "
                     f"{', '.join(loaded['fresh']) or 'none'})")
        self.log(f"[{label}] training {stage.model} on {len(train_set)} images for {stage.train.epochs} epochs")
        res = train(model, train_set, self.data.test, stage.train, out_dir=out, resume=True, device=self.device,
                    progress=self.progress, log=lambda s: self.log(f"[{label}] {s}"), epoch_callback=callback,
                    eval_train_set=train_set, summary_extra={"command": self.command})  # a table's clean row names it
        return res.model, res.summary

    def _surrogate_is_clean(self) -> bool:
        """Whether the trained surrogate is itself a clean victim (same model, recipe and data)."""
        cfg = self.cfg
        return (cfg.surrogate.model == cfg.victim.model and cfg.surrogate.model_args == cfg.victim.model_args
                and cfg.surrogate.train == cfg.victim.train and cfg.surrogate.fraction == 1
                and cfg.surrogate.path is None and cfg.needs_surrogate())

    def surrogate(self, needed: bool = True) -> tuple[torch.nn.Module | None, dict[str, Any]]:
        """Load or train the surrogate; with ``needed=False`` only work out its digest (for matching
        the triggers made earlier) and report a finished one, touching nothing."""
        cfg, data = self.cfg, self.data
        assert data is not None
        self.surrogate_digest = None
        if not cfg.needs_surrogate():
            return None, {}
        out = self.out / "surrogate"
        settings = self._surrogate_settings()
        if not needed:
            self.log("[surrogate] not needed by the --only selection")
        if cfg.surrogate.path is not None:
            if Path(cfg.surrogate.path).is_file():  # checked by prepare() when needed
                self.surrogate_digest = weights_fingerprint(cfg.surrogate.path)
            if not needed:
                return None, {"path": cfg.surrogate.path}
            model = load_model(cfg.surrogate.path, self.device, expect_classes=data.num_classes)
            return model, {"path": cfg.surrogate.path, "test_acc": accuracy(model, data.test)}
        weights = out / "model.safetensors"
        if not needed:
            done = self._matches(out, settings) and (out / "summary.json").is_file() and weights.is_file()
            self.surrogate_digest = weights_fingerprint(weights) if done else None
            return None, read_json(out / "summary.json") if done else {}
        self._stage(out, settings, "surrogate", MODEL_DONE)
        train_set = data.train.fraction(cfg.surrogate.fraction, cfg.seed)
        model, summary = self._train_stage(cfg.surrogate, train_set, out, "surrogate")
        self.surrogate_digest = weights_fingerprint(weights)  # triggers are keyed to the weights themselves
        return model, summary

    def clean(self, run: bool = True) -> dict[str, Any]:
        """The clean victim's summary; with ``run=False`` only a finished one's (or nothing)."""
        cfg, data = self.cfg, self.data
        assert data is not None
        if not cfg.clean_baseline:
            return {}
        if self._surrogate_is_clean():  # the surrogate *is* a clean victim: same model, recipe and data
            summary = self.out / "surrogate" / "summary.json"
            return read_json(summary) if summary.is_file() else {}
        out = self.out / "clean"
        settings = self._clean_settings()
        if not run:
            if self._matches(out, settings) and (out / "summary.json").is_file():
                return read_json(out / "summary.json")
            self.log("[clean] not run yet (left out by --only)")
            return {}
        self._stage(out, settings, "clean", MODEL_DONE)
        _, summary = self._train_stage(cfg.victim, data.train, out, "clean")
        return summary

    def trigger(self, name: str, surrogate: torch.nn.Module | None) -> Trigger:
        data = self.data
        assert data is not None
        folder = self.out / "triggers" / name
        attack = self.cfg.attack(name)
        self._stage(folder, self._trigger_settings(name), name, TRIGGER_DONE)
        path = folder / "trigger.safetensors"
        if path.is_file():
            self.log(f"[{name}] trigger done already: {path}")
            mark = load_trigger(path)
            self.trigger_digests[name] = mark.fingerprint()
            return mark
        self.log(f"[{name}] making the trigger")
        t0 = time.perf_counter()
        ckpt = folder / "optimize-checkpoint.safetensors"  # per pass: a killed optimisation resumes
        mark = attack.generate(data.train, surrogate, device=self.device, progress=self.progress,
                               log=lambda s: self.log(f"[{name}] {s}"), checkpoint=ckpt)
        # the wall time is the run's, not the trigger's: kept beside it, so that the same trigger made
        # again (or resumed after a kill) is the same file, and so is every export that copies it
        write_json(folder / "timing.json", {"wall_s": round(time.perf_counter() - t0, 2)})
        mark.render(folder / "trigger.png", data.test.images[:4])
        mark.save(path)
        ckpt.unlink(missing_ok=True)
        self.trigger_digests[name] = mark.fingerprint()  # victims are keyed to the trigger's tensors
        return mark

    def victim(self, name: str, mark: Trigger, rate: float, clean_ba: float | None) -> dict[str, Any]:
        cfg, data = self.cfg, self.data
        assert data is not None
        out = victim_dir(self.out, name, rate)
        if self.victim_ready(name, rate):
            self.log(f"[{name} @ {rate:g}] done already: {out}")
            return read_json(out / "eval.json")
        poisoned = poison_dataset(data.train, mark, rate, seed=cfg.seed, device=self.device)
        write_json(out / "poison.json", poisoned.manifest())
        if cfg.export and not (out / "poisoned").exists():
            export_poisoned(poisoned, out / "poisoned", trigger_file=self.out / "triggers" / name / "trigger",
                            test_set=data.test, progress=self.progress)
        callback = None
        if cfg.track_asr:
            def callback(model: torch.nn.Module, epoch: int) -> dict[str, float]:
                return {"asr": evaluate_attack(model, data.test, mark, device=self.device, full=False)["asr"]}
        model, summary = self._train_stage(cfg.victim, poisoned.data, out, f"{name} @ {rate:g}", callback)
        ev = evaluate_attack(model, data.test, mark, device=self.device)
        pred = predict(model, poisoned.data.images[poisoned.indices])
        fit_poison = (pred.cpu() == poisoned.data.labels[poisoned.indices]).float().mean().item()
        row = {"attack": name, "rate": rate, **ev, "clean_ba": clean_ba,
               "train_acc": summary.get("train_acc_clean"), "poison_fit": fit_poison,
               "num_poisoned": int(poisoned.indices.numel()), "epochs": cfg.victim.train.epochs,
               "crop_pad": cfg.victim.train.crop_pad, "flip": cfg.victim.train.flip,
               "train_size": len(data.train),
               "victim": cfg.victim.model, "wall_s": summary.get("wall_s"),
               "trigger_wall_s": self._trigger_wall(name), "command": self.command}
        write_json(out / "eval.json", row)
        self.log(f"[{name} @ {rate:g}] BA {ev['ba']:.4f}  ASR {ev['asr']:.4f}  (8-bit {ev['asr_quantized']:.4f})  "
                 f"train acc {row['train_acc']:.4f}  poisons fit {fit_poison:.4f}")
        return row

    def victim_ready(self, name: str, rate: float) -> bool:
        """Ready the victim's stage folder (reusing a finished one from the pool); whether it is finished."""
        out = victim_dir(self.out, name, rate)
        self._stage(out, self._victim_settings(name, rate), f"{name} @ {rate:g}", VICTIM_DONE)
        if not (out / "eval.json").is_file():
            return False
        row = read_json(out / "eval.json")
        if row.get("attack") != name:  # reused from a run that named this attack otherwise
            write_json(out / "eval.json", {**row, "attack": name})
        return True

    def _trigger_wall(self, name: str) -> float | None:
        timing = self.out / "triggers" / name / "timing.json"
        return read_json(timing).get("wall_s") if timing.is_file() else None

    # ------------------------------------------------------------------ all
    def check_only(self, only: Sequence[str] | None) -> list[tuple[str, float]] | None:
        """Parse ``--only`` selections (``NAME`` or ``NAME@RATE``) into the (attack, rate) pairs to run."""
        if not only:
            return None
        cfg, pairs = self.cfg, []
        for item in only:
            name, _, rate_s = item.partition("@")
            if name == "clean" and not rate_s:
                pairs.append(("clean", 0.0))
                continue
            if name not in cfg.attacks:
                raise SibaError(f"--only {item}: no attack {name!r} in the config (it has {', '.join(cfg.attacks)})")
            if not rate_s:
                pairs += [(name, r) for r in cfg.rates]
                continue
            try:
                rate = float(rate_s)
            except ValueError:
                raise SibaError(f"--only {item}: {rate_s!r} is not a rate") from None
            match = [r for r in cfg.rates if abs(r - rate) < 1e-9]
            if not match:
                raise SibaError(f"--only {item}: rate {rate:g} is not among the config's rates "
                                f"({', '.join(f'{r:g}' for r in cfg.rates)})")
            pairs.append((name, match[0]))
        return pairs

    def run_shared(self, fresh: bool = False) -> dict[str, Trigger]:
        """Run the stages a run's victims share — the surrogate (when an attack needs one), every
        trigger and the clean baseline — and no victim; returns the triggers (also in ``self.marks``).

        A grid (:mod:`siba.experiments.grid`) calls it on the driver, then trains the victims as
        separate ``run(only=[NAME@RATE])`` calls, which find these stages finished."""
        need_surrogate = self.cfg.needs_surrogate()  # also covers a surrogate that is the clean baseline
        self.prepare(fresh, need_surrogate)
        surrogate, _ = self.surrogate(need_surrogate)
        self.clean(run=True)
        self.marks = {name: self.trigger(name, surrogate) for name in self.cfg.attacks}
        return self.marks

    def run(self, fresh: bool = False, only: Sequence[str] | None = None) -> dict[str, Any]:
        """Run every stage; with ``only`` train just those victims. Returns ``results.json``'s content
        (every finished victim of the config); the triggers are in ``self.marks``. The report is the
        layer above's (``siba.report.write_report``, which ``siba run`` calls)."""
        t0 = time.perf_counter()
        selected = self.check_only(only)
        run_clean = selected is None or ("clean", 0.0) in selected
        wanted = [n for n in self.cfg.attacks if selected is None or any(n == s for s, _ in selected)]
        need_surrogate = (any(self.cfg.attack(n).needs_surrogate for n in wanted)
                          or (run_clean and self.cfg.clean_baseline and self._surrogate_is_clean()))
        data = self.prepare(fresh, need_surrogate)
        surrogate, sur_summary = self.surrogate(need_surrogate)
        clean = self.clean(run=run_clean)
        clean_ba = clean.get("test_acc")
        marks: dict[str, Trigger] = {}
        rows = []
        for name in self.cfg.attacks:
            path = self.out / "triggers" / name / "trigger.safetensors"
            settings = self._trigger_settings(name)
            if name in wanted:
                marks[name] = self.trigger(name, surrogate)
            elif self._matches(path.parent, settings) and path.is_file():
                marks[name] = load_trigger(path)
                self.trigger_digests[name] = marks[name].fingerprint()
        for rate in self.cfg.rates:
            for name in self.cfg.attacks:
                if selected is None or (name, rate) in selected:
                    rows.append(self.victim(name, marks[name], rate, clean_ba))
                else:
                    folder = victim_dir(self.out, name, rate)
                    if (name in marks and self._matches(folder, self._victim_settings(name, rate))
                            and (folder / "eval.json").is_file()):
                        rows.append(read_json(folder / "eval.json"))
                    else:
                        self.log(f"[{name} @ {rate:g}] not run yet (left out by --only)")
        if clean_ba is not None:  # a clean baseline trained after some victims: their rows get its BA too
            for row in rows:
                row["clean_ba"] = clean_ba
        results = {"name": self.cfg.name, "data": self.cfg.data, "train_images": len(data.train),
                   "test_images": len(data.test), "classes": list(data.test.classes),
                   "surrogate": _brief(sur_summary), "clean": _brief(clean),
                   "results": rows, "wall_s": round(time.perf_counter() - t0, 1), "command": self.command}
        write_json(self.out / "results.json", results)
        self.marks = marks
        return results


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("test_acc", "train_acc_clean", "train_acc", "wall_s", "epochs", "path", "precision", "device", "command")
    return {k: summary[k] for k in keys if k in summary}


class _ProbeTrigger(Trigger):
    """A stand-in trigger for checking rates before the real trigger exists."""

    kind = ""

    def __init__(self, num_classes: int, target: int, rule: str) -> None:
        super().__init__(num_classes=num_classes, target=target, target_rule=rule)


def run_config(cfg: RunConfig, out_dir: str | Path, *, fresh: bool = False, progress: bool | None = None,
               command: str | None = None, only: Sequence[str] | None = None,
               reuse: Sequence[str | Path] | None = None) -> dict[str, Any]:
    return Pipeline(cfg, out_dir, progress=progress, command=command, reuse=reuse).run(fresh, only)
