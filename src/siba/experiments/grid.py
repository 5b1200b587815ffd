"""Grids of runs: several configs (targets, rates, budgets, architectures, seeds) into one folder.

Each :class:`GridRun` is an ordinary run folder ``ROOT/<name>/`` — the same files as
``siba run CONFIG --out ROOT/<name>`` — so anything that reads a run reads a grid's runs. A run
may name an earlier run of the grid as its ``share`` donor: before it starts, the donor's
*finished* shared stages (``surrogate/``, ``clean/``, ``triggers/<attack>/`` of the attacks this
run has) are copied into its folder, and the pipeline's content keys decide whether each copy is
reused (same data, seed, recipe, surrogate weights, resolved precision) or redone. A copy is
therefore never wrong, only useless: runs that differ in the victim, the rate or the architecture
of the victim share the surrogate and the triggers; a run with another surrogate recipe retrains
its surrogate and remakes its surrogate-based triggers. Victims are never copied.

Two executors (``docs/grid.md``):

* ``serial`` runs each run in order, as ``siba run`` would.
* ``ray`` runs each run's shared stages on the driver, then trains every victim as one Ray
  task (``Pipeline.run(only=[NAME@RATE])`` in the worker; a victim writes only its own folder,
  and ``config.json`` and ``results.json`` are written atomically), then gathers each run on the
  driver (a ``Pipeline.run()`` that finds every stage finished and writes the complete
  ``results.json``). The grid root must be on a file system that the driver and every Ray node
  share. ``address=None`` follows Ray's convention: ``RAY_ADDRESS`` when set, else a new local
  instance with this machine's CPUs (``os.cpu_count()``, fewer where an affinity mask says so),
  shut down at the end; ``"auto"`` joins a cluster started with ``ray start``. Ray is the
  ``siba[ray]`` extra.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import SibaError, first_line
from ..runtime import cpu_count, write_json
from .config import MAX_NAME, RunConfig
from .pipeline import (MODEL_DONE, STAGE_FORMAT, TRIGGER_DONE, Pipeline, StagePool, _say, copy_stage,
                       stage_finished)

EXECUTORS = ("serial", "ray")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # one folder name, the same alphabet as an attack's
COPY_TAG = ".grid-copy"  # a donor's stage is copied to ".<stage>.grid-copy" beside its place, then renamed


@dataclass
class GridRun:
    name: str  # folder name under the grid root (letters, digits, . _ + -)
    config: RunConfig
    share: str | None = None  # name of an earlier GridRun in the same grid whose finished shared stages
    # (surrogate/, clean/, triggers/*) are copied in before this run starts; the
    # pipeline's content keys decide whether each copy is reused or redone


def run_grid(runs: Sequence[GridRun], root: str | Path, *, executor: str = "serial", address: str | None = None,
             progress: bool | None = None, log: Callable[[str], None] | None = None,
             command: str | None = None, fresh: bool = False, cpus_per_task: int = 1,
             gpus_per_task: float = 0,
             reuse: Sequence[str | Path] | StagePool | None = None) -> dict[str, dict[str, Any]]:
    """Run every GridRun into root/<name>/ and return {name: results.json content}.

    ``fresh`` redoes every run from nothing (a run with a donor then copies the donor's new
    stages). With ``executor="ray"``, each victim task asks Ray for ``cpus_per_task`` CPUs (and
    ``gpus_per_task`` GPUs) and trains with that many threads (``SIBA_THREADS``). ``reuse``: folders
    whose finished stages of the same content key are copied in instead of recomputed (on the
    driver, victims included: see :class:`~siba.experiments.pipeline.StagePool`). Every setting is
    checked before anything is written (one-line :class:`SibaError`)."""
    root = _check_grid(runs, root, executor, address, cpus_per_task, gpus_per_task)
    pool = reuse if isinstance(reuse, StagePool) or not reuse else StagePool(reuse)
    log = log or _say
    if executor == "serial":
        return _run_serial(runs, root, progress, log, command, fresh, pool)
    return _run_ray(runs, root, address, cpus_per_task, gpus_per_task, progress, log, command, fresh, pool)


# ---------------------------------------------------------------------------- checks


def _check_grid(runs: Sequence[GridRun], root: str | Path, executor: str, address: str | None,
                cpus_per_task: int, gpus_per_task: float) -> Path:
    """The grid root as an absolute path, once every setting is checked; writes nothing."""
    if isinstance(runs, (str, bytes)) or not isinstance(runs, Sequence):
        raise SibaError(f"a grid is a list of GridRun, got {type(runs).__name__}")
    if not runs:
        raise SibaError("the grid is empty: give it at least one run")
    seen: dict[str, str] = {}
    for i, run in enumerate(runs, 1):
        if not isinstance(run, GridRun):
            raise SibaError(f"grid run {i} must be a GridRun, got {type(run).__name__}")
        name = run.name
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not RUN_NAME.fullmatch(name):
            raise SibaError(f"grid run {i}: a run's name must be at most {MAX_NAME} letters, digits and . _ + - "
                            f"(it names a folder), got {name!r}")
        if name.lower() in seen:  # one folder on a case-insensitive file system
            other = seen[name.lower()]
            raise SibaError(f"the grid has two runs named {name!r}" if other == name else
                            f"the grid has runs named {other!r} and {name!r}, one folder where case is not told apart")
        if not isinstance(run.config, RunConfig):
            raise SibaError(f"grid run {name!r}: config must be a RunConfig (parse_config makes one), "
                            f"got {type(run.config).__name__}")
        if run.share is not None and run.share not in seen.values():
            raise SibaError(f"grid run {name!r}: share={run.share!r} names no run before it in the grid")
        seen[name.lower()] = name
    if executor not in EXECUTORS:
        raise SibaError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if executor == "serial" and address is not None:
        raise SibaError(f"address={address!r} is for the ray executor (executor='ray')")
    if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, int) or cpus_per_task < 1:
        raise SibaError(f"cpus_per_task must be a whole number ≥ 1, got {cpus_per_task!r}")
    if isinstance(gpus_per_task, bool) or not isinstance(gpus_per_task, (int, float)) or not gpus_per_task >= 0:
        raise SibaError(f"gpus_per_task must be a number ≥ 0, got {gpus_per_task!r}")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SibaError("the ray executor needs Ray, which is not installed: pip install 'siba[ray]'") from None
    if not isinstance(root, (str, os.PathLike)) or not str(root).strip():
        raise SibaError(f"the grid root must be a folder path, got {root!r}")
    path = Path(root).expanduser().absolute()  # Ray workers start elsewhere: the path must not be relative
    if path.exists() and not path.is_dir():
        raise SibaError(f"the grid root {path} is a file, not a folder")
    return path


# ---------------------------------------------------------------------------- sharing


def copy_shared(donor: str | Path, out: str | Path, cfg: RunConfig, command: str | None = None) -> list[str]:
    """Copy the finished shared stages of run folder ``donor`` that run folder ``out`` lacks.

    Copies ``surrogate/`` (when ``cfg`` has an attack that needs a surrogate), ``clean/`` (when
    ``cfg`` has a clean baseline) and ``triggers/<attack>/`` for the attacks of ``cfg``; a folder
    that ``out`` already has is left alone, victims are never copied. Each copy is made under a
    hidden name and renamed into place, so a killed copy leaves no half stage. A folder ``out``
    that exists but is no run folder gets nothing (the pipeline then refuses it). Returns the
    copied folders, relative to the run folder.
    """
    donor, out = Path(donor), Path(out)
    if not (donor / "config.json").is_file():
        return []
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        return []
    wanted = []
    if cfg.needs_surrogate() and cfg.surrogate.path is None:
        wanted.append(("surrogate", MODEL_DONE))
    if cfg.clean_baseline:
        wanted.append(("clean", MODEL_DONE))
    wanted += [(f"triggers/{name}", TRIGGER_DONE) for name in cfg.attacks]
    copied = []
    for rel, done in wanted:  # finished stages only: their keys are the pipeline's to judge
        src, dest = donor / rel, out / rel
        if dest.exists() or not stage_finished(src, done):
            continue
        if not (out / "config.json").is_file():  # the folder becomes a run folder, as prepare() would make it
            write_json(out / "config.json", {"format": STAGE_FORMAT, "config": cfg.to_dict(), "command": command})
        copy_stage(src, dest, COPY_TAG)
        copied.append(rel)
    return copied


def _begin(run: GridRun, root: Path, fresh: bool, log: Callable[[str], None], command: str | None) -> bool:
    """Ready ``run``'s folder (a fresh start, the donor's stages); returns the ``fresh`` to run it with."""
    out = root / run.name
    if run.share is None:
        return fresh
    if fresh and (out / "config.json").is_file():  # cleared before the copy, not after it
        shutil.rmtree(out)
    copied = copy_shared(root / run.share, out, run.config, command)
    if copied:
        log(f"[grid] {run.name}: copied {', '.join(copied)} from {run.share}")
    return False


def _prefixed(log: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda line: log(f"[{name}] {line}")


# ---------------------------------------------------------------------------- executors


def _run_serial(runs: Sequence[GridRun], root: Path, progress: bool | None, log: Callable[[str], None],
                command: str | None, fresh: bool, pool: StagePool | None = None) -> dict[str, dict[str, Any]]:
    results = {}
    for run in runs:
        run_fresh = _begin(run, root, fresh, log, command)
        pipe = Pipeline(run.config, root / run.name, progress=progress, log=_prefixed(log, run.name), command=command,
                        reuse=pool)
        results[run.name] = pipe.run(run_fresh)
        log(f"[grid] {run.name} done ({len(results)}/{len(runs)})")
    return results


def _run_ray(runs: Sequence[GridRun], root: Path, address: str | None, cpus_per_task: int, gpus_per_task: float,
             progress: bool | None, log: Callable[[str], None], command: str | None,
             fresh: bool, pool: StagePool | None = None) -> dict[str, dict[str, Any]]:
    import ray

    started = False
    if not ray.is_initialized():
        try:
            if address == "local" or (address is None and not os.environ.get("RAY_ADDRESS")):
                ray.init(address="local", num_cpus=cpu_count())
            else:
                ray.init(address=address)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
            raise SibaError(f"cannot start Ray ({where}): {first_line(exc)}") from None
        started = True
    try:
        todo = []
        for run in runs:  # the shared stages, on the driver
            run_fresh = _begin(run, root, fresh, log, command)
            pipe = Pipeline(run.config, root / run.name, progress=progress, log=_prefixed(log, run.name),
                            command=command, reuse=pool)
            pipe.run_shared(run_fresh)
            for rate in run.config.rates:  # the pipeline's order
                for attack in run.config.attacks:
                    if pipe.victim_ready(attack, rate):  # finished here, or reused from the pool
                        log(f"[grid] {run.name} {attack}@{rate:g} done already")
                    else:
                        todo.append((run, attack, rate))
        task = ray.remote(_train_victim).options(
            num_cpus=cpus_per_task, num_gpus=gpus_per_task,
            runtime_env={"env_vars": {"SIBA_THREADS": str(cpus_per_task)}})
        pending = {task.remote(run.config, str(root / run.name), f"{attack}@{rate!r}", command):
                   (run.name, attack, rate) for run, attack, rate in todo}
        failed = []
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            name, attack, rate = pending.pop(ref)
            error, lines = ray.get(ref)
            for line in lines:
                log(f"[{name}] {line}")
            k = len(todo) - len(pending)
            if error is None:
                log(f"[grid] {name} {attack}@{rate:g} done ({k}/{len(todo)})")
            else:
                log(f"[grid] {name} {attack}@{rate:g} failed ({k}/{len(todo)}): {error}")
                failed.append(f"{name} {attack}@{rate:g}: {error}")
        if failed:
            raise SibaError(f"{len(failed)} of {len(todo)} victim tasks failed; the first: {failed[0]}")
        results = {}
        for run in runs:  # the gather pass: every stage is finished, so it trains nothing
            redone = []

            def watch(line: str, name: str = run.name, redone: list[str] = redone) -> None:
                if "] training " in line or "] making the trigger" in line:
                    redone.append(line)
                log(f"[{name}] {line}")

            results[run.name] = Pipeline(run.config, root / run.name, progress=progress, log=watch,
                                         command=command).run()
            if redone:
                log(f"[grid] {run.name}: the gather pass redid {len(redone)} stage(s) that the workers had made: their "
                    "keys differ on the driver (another device, or precision auto resolving otherwise?)")
        return results
    finally:
        if started:
            ray.shutdown()


class _TaskPipeline(Pipeline):
    """The pipeline of a victim task: it trains its victim and redoes no shared stage.

    The driver made the shared stages; a worker whose key for one differs (other data at the
    config's path on this node, ``precision: auto`` resolving otherwise on its device) would
    otherwise retrain it in the shared folder while other tasks read it."""

    def _stage(self, folder: Path, settings: dict[str, Any], label: str, done: Sequence[str] = ()) -> str:
        if folder.parent != self.out / "victims" and not self._matches(folder, settings):
            raise SibaError(f"[{label}] the shared stage {folder} does not match what this Ray worker computes "
                            f"on {socket.gethostname()} (other data, or precision auto resolving otherwise on its "
                            "device?); a task redoes no shared stage: make the nodes alike or set precision")
        return super()._stage(folder, settings, label, done)


def _train_victim(cfg: RunConfig, out: str, only: str, command: str | None) -> tuple[str | None, list[str]]:
    """A Ray task: train one victim of run folder ``out``; returns (a one-line error or None, its log)."""
    lines: list[str] = []
    folder = Path(out)
    if not (folder / "config.json").is_file():
        return (f"{folder} is not visible on the Ray node {socket.gethostname()}: the grid root must be on a file "
                "system that the driver and every node share"), lines
    t0 = time.perf_counter()
    try:
        _TaskPipeline(cfg, folder, progress=False, log=lines.append, command=command).run(only=[only])
    except SibaError as exc:
        return str(exc), lines
    lines.append(f"task wall time {time.perf_counter() - t0:.1f} s on {socket.gethostname()}")
    return None, lines
