"""Run a paper item at a scale and write ``results/reproduce/<item>/<scale>/``.

The runs go through the one pipeline (``siba.experiments.grid.run_grid``: the stages of ``siba
run``, resumable, shared between runs where their content keys match) into
``runs/reproduce/<item>/<scale>/<run>/``; a stage that another item (or a folder named with
``reuse``, e.g. a ``siba table`` run) already finished with the same content key is copied, not
recomputed (the Table I SIBA victim is Figure 3's target 0, Figure 5's ``k`` = 100, Figure 6's
``ε`` = 8/255 and Table V's 100%); a defense item then runs its defense against every
victim (``siba.experiments.defend``, as ``siba defend`` does); the item's writer makes its
table or figure. Every item folder holds ``item.md`` (the page: our numbers, the paper's where
our copy of it kept them, ours against the paper's claim (``versus``), the recipe, the command, the
machine, the git revision, the wall time and the compute of every stage it used),
``data.json`` (the same, as data) and its figures; where ``--data`` names a folder siba built (it has a
``manifest.json``), the page names the command that built it and ``data-manifest.json`` keeps its manifest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import SibaError
from ..runtime import atomic_path, git_revision, machine_info, pick_device, read_json, write_json
from .items import ITEMS, Context, PaperItem
from .scales import SCALES


def check_request(names: Sequence[str], scale: str, seeds: int, executor: str,
                  data: str | None = None, log: Callable[[str], None] = print) -> list[PaperItem]:
    """The items asked for, with every argument checked first (one-line errors, nothing run)."""
    if scale not in SCALES:
        raise SibaError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= 100:
        raise SibaError(f"--seeds must be a whole number from 1 to 100, got {seeds!r}")
    if executor not in ("serial", "ray"):
        raise SibaError(f"unknown executor {executor!r}; choose from serial, ray")
    if not names:
        raise SibaError("name a paper item (siba reproduce --list shows them) or all")
    if list(names) == ["all"]:
        chosen = [ITEMS[n] for n in ITEMS]
        if data is None:
            for item in chosen:
                if item.needs_data:
                    log(f"[reproduce] {item.name} left out of all: it needs --data")
            chosen = [i for i in chosen if not i.needs_data]
        return chosen
    if "all" in names:
        raise SibaError("all stands alone: name items, or all")
    return [ITEMS.lookup(n) for n in names]


def parse_init(values: Sequence[str]) -> dict[str, str]:
    """``--init MODEL=FILE`` values as a mapping (one-line errors for a bad form, an unknown or repeated model)."""
    from ..models import MODELS

    out: dict[str, str] = {}
    for value in values:
        arch, sep, path = value.partition("=")
        if not sep or not arch or not path:
            raise SibaError(f"--init must be MODEL=FILE, e.g. resnet18=resnet18-f37072fd.pth; got {value!r}")
        if arch not in MODELS:
            raise SibaError(f"--init {value}: unknown model {arch!r}; choose from {', '.join(sorted(MODELS))}")
        if arch in out:
            raise SibaError(f"--init names {arch} twice")
        out[arch] = path
    return out


def run_item(item: PaperItem, scale: str, *, results_root: str | Path = "results/reproduce",
             runs_root: str | Path = "runs/reproduce", data: str | None = None, seeds: int = 1,
             executor: str = "serial", address: str | None = None, progress: bool | None = None,
             command: str | None = None, log: Callable[[str], None] = print,
             reuse: Sequence[str | Path] = (), init: Mapping[str, str] | None = None) -> Path:
    """Run ``item`` at ``scale``; returns its results folder. Finished stages of the same content
    key under ``runs_root`` (every item's runs) and the ``reuse`` folders are copied, not redone.
    ``init`` (model name → weights file) starts every surrogate and victim of that model from the file."""
    from ..experiments.defend import defend_run
    from ..experiments.grid import copy_shared, run_grid
    from ..experiments.pipeline import Pipeline, StagePool

    plan = item.plan(scale, data, list(range(seeds)), init)  # checks every config before any work
    pool_roots = [*([Path(runs_root)] if Path(runs_root).is_dir() else []), *map(Path, reuse)]
    pool = StagePool(pool_roots) if pool_roots else None
    runs_dir = Path(runs_root) / (item.runs_group or item.name) / scale  # a group's items share their runs
    out = Path(results_root) / item.name / scale
    t0 = time.perf_counter()
    if plan.triggers_only:
        results = {}
        for run in plan.runs:
            if run.share:
                copy_shared(runs_dir / run.share, runs_dir / run.name, run.config, command)
            Pipeline(run.config, runs_dir / run.name, progress=progress, log=log, command=command,
                     reuse=pool).run_shared()
            results[run.name] = {}
    else:
        results = run_grid(plan.runs, runs_dir, executor=executor, address=address, progress=progress, log=log,
                           command=command, reuse=pool)
    defense_dirs = {}
    if plan.defense:
        from ..defenses import create_defense

        name, settings = plan.defense
        for run in plan.runs:
            root = runs_dir / run.name / "defenses"
            defend_run(runs_dir / run.name, {name: create_defense(name, **settings)}, root, progress=progress,
                       log=log, command=command)
            defense_dirs[run.name] = root / name
    wall = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(item, scale, out, {r.name: runs_dir / r.name for r in plan.runs}, results, list(range(seeds)),
                  defense_dirs)
    made = data_provenance(data, out)
    body, item_data = item.write(ctx)
    versus, agrees = item.versus.render(item_data, scale) if item.versus else ("", None)
    meta = {"item": item.name, "title": item.title, "scale": scale, "recipe": item.recipe(scale),
            "seeds": seeds, "command": command, "machine": machine_info(pick_device("auto")),
            "git_revision": git_revision(), "wall_s": wall,
            "compute_s": compute_seconds([*ctx.run_dirs.values()], [*defense_dirs.values()]),
            "runs": str(runs_dir), "stage_wall_s": _stage_walls(results), "paper": item.paper,
            "paper_note": item.paper_note, "versus": {"text": versus, "agrees": agrees} if versus else None,
            "data_set": made}
    write_json(out / "data.json", {**meta, "data": item_data})
    with atomic_path(out / "item.md") as tmp:
        tmp.write_text(_page(item, meta, body))
    log(f"[reproduce] {item.name} ({scale}): {out / 'item.md'}")
    return out


DATA_MANIFEST = "data-manifest.json"


def data_provenance(data: str | None, out: Path) -> dict[str, Any] | None:
    """Where ``--data`` names a folder built by siba (``siba data vggface2-subset``, ``scripts/make_rot20.py``):
    its manifest copied beside the item's page, and what the page says of it (the folder, the command
    that built it). None for a data set without a manifest (the shipped subset, an archive)."""
    manifest = Path(data) / "manifest.json" if data else None
    if manifest is None or not manifest.is_file():
        return None
    m = read_json(manifest)
    write_json(out / DATA_MANIFEST, m)
    return {"path": str(data), "format": m.get("format"), "made_by": m.get("command"), "manifest": DATA_MANIFEST}


VERSUS_HEADING = "## Against the paper"  # the page's section with the verdict (written by _page, rewritten by rejudge)


def rejudge(item: PaperItem, scale: str, results_root: str | Path = "results/reproduce") -> bool | None:
    """Judge an item's committed page against the paper again from its ``data.json`` alone (no run: for when
    a rule or a why in :mod:`siba.reproduce.versus` changed after the run folders were removed): rewrites the
    page's "Against the paper" section and ``data.json``'s ``versus`` (with the git revision that judged it,
    ``judged_at``). False where nothing changed, None where the item has no committed page at that scale."""
    out = Path(results_root) / item.name / scale
    if not (out / "data.json").is_file() or not (out / "item.md").is_file() or not item.versus:
        return None
    data = read_json(out / "data.json")
    text, agrees = item.versus.render(data["data"], scale)
    old = (data.get("versus") or {}).get("text")
    page = (out / "item.md").read_text()
    head = f"{VERSUS_HEADING}\n\n"  # as _page writes the section
    if old == text and (data.get("versus") or {}).get("agrees") == agrees:
        return False
    if not old or head + old not in page:
        raise SibaError(f"{out / 'item.md'}: its section against the paper is not the one its data.json holds; "
                        f"rerun `siba reproduce {item.name} --scale {scale}`")
    write_json(out / "data.json", {**data, "versus": {"text": text, "agrees": agrees, "judged_at": git_revision()}})
    with atomic_path(out / "item.md") as tmp:
        tmp.write_text(page.replace(head + old, head + text, 1))
    return True


def compute_seconds(run_dirs: Sequence[Path], defense_dirs: Sequence[Path] = ()) -> float:
    """The seconds every stage an item used took when it ran (surrogates, triggers, victims, defenses), each
    stage counted once (a stage shared or copied between runs has one digest), whichever run did it: unlike
    the wall time of one invocation, this does not shrink when the item is resumed."""
    seen: dict[str, float] = {}
    for run in run_dirs:
        for stage in sorted(Path(run).rglob("stage.json")):
            digest = (read_json(stage) or {}).get("digest") or str(stage.parent)
            for name in ("summary.json", "timing.json"):
                if (stage.parent / name).is_file():
                    wall = (read_json(stage.parent / name) or {}).get("wall_s")
                    if isinstance(wall, (int, float)):
                        seen[digest] = float(wall)
                    break
    total = sum(seen.values())
    for root in defense_dirs:
        for res in sorted(Path(root).glob("*/result.json")):
            wall = (read_json(res) or {}).get("wall_s")
            total += float(wall) if isinstance(wall, (int, float)) else 0.0
    return round(total, 1)


def _stage_walls(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for name, res in results.items():
        out[name] = {"surrogate": (res.get("surrogate") or {}).get("wall_s"),
                     "victims": {f"{r['attack']}@{r['rate']:g}": r.get("wall_s") for r in res.get("results", [])}}
    return out


def _page(item: PaperItem, meta: dict[str, Any], body: str) -> str:
    m = meta["machine"]
    machine = f"{m['cores']}-core {m['cpu']}" + (f", GPU {m['gpu']}" if m.get("gpu") else "") + \
        f", PyTorch {m['torch']}"
    lines = [f"# {item.title}", "", f"Paper: {item.section}. Scale: **{meta['scale']}** — {meta['recipe']}.",
             ""]
    if meta["seeds"] > 1:
        lines += [f"Seeds: {meta['seeds']} (mean ± std over seeds).", ""]
    lines += [body, ""]
    if meta.get("versus"):
        lines += [VERSUS_HEADING, "", meta["versus"]["text"], ""]
    if item.paper:
        lines += [f"The paper's numbers: {item.paper}.", ""]
    if item.paper_note:
        lines += [item.paper_note, ""]
    made = meta.get("data_set")
    if made:
        lines += [f"Data set: `{made['path']}`" + (f", built by `{made['made_by']}`" if made.get("made_by") else "")
                  + f" (its manifest: [{made['manifest']}]({made['manifest']})).", ""]
    lines += [f"Command: `{meta['command']}`  ", f"Machine: {machine}  ",
              f"Git revision: {meta['git_revision']}  ", f"Wall time: {meta['wall_s']:.0f} s "
              "(work already done by an earlier, resumed run is not counted)  ",
              f"Compute: {meta['compute_s']:.0f} s (every stage it used, timed when it ran, each once)", ""]
    return "\n".join(lines)


def item_table(scale_filter: str | None = None) -> str:
    """``siba reproduce --list``: each item with its scales and estimated cost."""
    rows = []
    for name in ITEMS:
        item = ITEMS[name]
        costs = "; ".join(f"{s}: {item.costs[s]}" for s in SCALES if s in item.costs
                          and (scale_filter is None or s == scale_filter))
        rows.append(f"{name:12s} {item.title}\n{'':12s} {costs}")
    return "\n".join(rows)


def committed(results_root: str | Path = "results/reproduce") -> list[dict[str, Any]]:
    """The items whose results are in ``results_root`` (for the README's table)."""
    out = []
    for data in sorted(Path(results_root).glob("*/*/data.json")):
        d = read_json(data)
        out.append({"item": d.get("item"), "scale": d.get("scale"), "path": str(data.parent),
                    "wall_s": d.get("wall_s")})
    return out
