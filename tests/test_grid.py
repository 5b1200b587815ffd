"""Grids of runs (siba.experiments.grid): shared stages, bad grids, and the Ray executor equal to the serial one."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from siba.errors import SibaError
from siba.experiments import GridRun, Pipeline, RunConfig, parse_config, run_grid
from siba.experiments.grid import _train_victim

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TIMING = ("wall_s", "trigger_wall_s", "command")  # what two identical runs may differ in


def tiny(name: str, **changes) -> RunConfig:
    """The smoke config in fp32 on the CPU (deterministic at a fixed thread count), with ``changes``."""
    raw = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    raw.update(name=name, device="cpu")
    for stage in ("surrogate", "victim"):
        raw[stage]["train"]["precision"] = "fp32"
    raw["attacks"]["siba"]["precision"] = "fp32"
    for key, value in changes.items():
        if key in ("surrogate_train", "victim_train"):
            raw[key.split("_")[0]]["train"].update(value)
        else:
            raw[key] = value
    return parse_config(raw, f"{name}.yaml")


def grid_runs() -> list[GridRun]:
    """Two runs: ``b`` (another rate, siba only) shares ``a``'s surrogate and siba trigger."""
    a = tiny("a")
    b = tiny("b", rates=[0.1], attacks={"siba": a.attacks["siba"]})
    return [GridRun("a", a), GridRun("b", b, share="a")]


def comparable(results: dict) -> dict:
    """``results.json`` content without the wall times and the command."""
    out = {k: v for k, v in results.items() if k not in TIMING}
    out["results"] = [{k: v for k, v in row.items() if k not in TIMING} for row in results["results"]]
    for stage in ("surrogate", "clean"):
        out[stage] = {k: v for k, v in results[stage].items() if k != "wall_s"}
    return out


def victim_weights(run: Path) -> dict[str, tuple[dict, dict[str, bytes]]]:
    """Each victim's model file as (metadata, the bytes of every tensor). Not the file's bytes: safetensors
    writes the metadata in an order that differs from one process (and one save) to the next."""
    from safetensors import safe_open

    models = {}
    for path in sorted((run / "victims").glob("*/model.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k).numpy().tobytes() for k in fh.keys()}
            models[path.parent.name] = (fh.metadata(), tensors)
    return models


@pytest.fixture(scope="module")
def serial_grid(tmp_path_factory):
    """The two-run grid, run serially once per module with one thread: (root, results, log lines)."""
    root = tmp_path_factory.mktemp("grid") / "serial"
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIBA_CACHE", str(tmp_path_factory.getbasetemp() / "siba-cache"))
        mp.setenv("SIBA_THREADS", "1")
        results = run_grid(grid_runs(), root, log=lines.append, progress=False)
    return root, results, lines


def test_a_run_that_shares_reuses_the_donors_surrogate_and_trigger_and_equals_a_standalone_run(
        serial_grid, tmp_path, monkeypatch):
    root, results, lines = serial_grid
    assert set(results) == {"a", "b"}
    for name in ("a", "b"):
        assert json.loads((root / name / "results.json").read_text()) == results[name]
    assert "[grid] b: copied surrogate, triggers/siba from a" in lines
    assert any(s.startswith("[a] [surrogate] training") for s in lines)
    assert not any(s.startswith("[b] [surrogate] training") for s in lines)
    assert any(s.startswith("[b] [surrogate] done already") for s in lines)
    assert any(s.startswith("[b] [siba] trigger done already") for s in lines)
    surrogate = "surrogate/model.safetensors"
    assert (root / "b" / surrogate).read_bytes() == (root / "a" / surrogate).read_bytes()
    assert not (root / "b/triggers/badnets").exists()  # only the triggers of b's own attacks are copied
    assert sorted(p.name for p in (root / "b/victims").iterdir()) == ["siba-r0.1"]  # victims are never copied
    assert [(r["attack"], r["rate"]) for r in results["a"]["results"]] == [("siba", 0.05), ("badnets", 0.05)]
    # b alone, from nothing, gives the same numbers and the same victim
    monkeypatch.setenv("SIBA_THREADS", "1")
    alone = Pipeline(grid_runs()[1].config, tmp_path / "alone", progress=False, log=lambda s: None).run()
    assert comparable(alone) == comparable(results["b"])
    assert victim_weights(tmp_path / "alone") == victim_weights(root / "b")


def test_a_donor_with_another_surrogate_recipe_is_redone_not_reused(serial_grid, tmp_path, monkeypatch):
    root = tmp_path / "grid"
    shutil.copytree(serial_grid[0] / "a", root / "a")
    a = grid_runs()[0]
    c = tiny("c", surrogate_train={"lr": 0.1}, attacks={"siba": a.config.attacks["siba"]})
    lines: list[str] = []
    monkeypatch.setenv("SIBA_THREADS", "1")
    run_grid([a, GridRun("c", c, share="a")], root, log=lines.append, progress=False)
    assert any(s.startswith("[a] [surrogate] done already") for s in lines)  # a is finished: nothing redone
    assert not any(s.startswith("[a]") and "training" in s for s in lines)
    assert "[grid] c: copied surrogate, triggers/siba from a" in lines
    assert "[c] [surrogate] settings changed since the last run: redoing it" in lines
    assert any(s.startswith("[c] [surrogate] training") for s in lines)
    assert "[c] [siba] settings changed since the last run: redoing it" in lines  # keyed to the new weights
    surrogate = "surrogate/model.safetensors"
    assert (root / "c" / surrogate).read_bytes() != (root / "a" / surrogate).read_bytes()
    assert json.loads((root / "c/surrogate/stage.json").read_text())["settings"]["surrogate"]["train"]["lr"] == 0.1


@pytest.mark.parametrize("runs, kwargs, needle", [
    ([], {}, "the grid is empty"),
    ([GridRun("a", None)], {}, "config must be a RunConfig"),
    ("ab", {}, "a grid is a list of GridRun"),
    ([GridRun("", "cfg")], {}, "a run's name must be"),
    ([GridRun("a/b", "cfg")], {}, "a run's name must be"),
    ([GridRun(".hidden", "cfg")], {}, "a run's name must be"),
    ([GridRun("two words", "cfg")], {}, "a run's name must be"),
    ([GridRun("a", "cfg"), GridRun("a", "cfg")], {}, "two runs named 'a'"),
    ([GridRun("a", "cfg"), GridRun("A", "cfg")], {}, "runs named 'a' and 'A'"),
    ([GridRun("a", "cfg", share="a")], {}, "share='a' names no run before it"),
    ([GridRun("a", "cfg", share="b"), GridRun("b", "cfg")], {}, "share='b' names no run before it"),
    ([GridRun("a", "cfg", share="zzz")], {}, "share='zzz' names no run before it"),
    ([GridRun("a", "cfg")], {"executor": "dask"}, "unknown executor 'dask'; choose from serial, ray"),
    ([GridRun("a", "cfg")], {"address": "auto"}, "address='auto' is for the ray executor"),
    ([GridRun("a", "cfg")], {"executor": "ray", "cpus_per_task": 0}, "cpus_per_task must be"),
])
def test_a_bad_grid_is_a_one_line_error_and_writes_nothing(tmp_path, runs, kwargs, needle):
    cfg = tiny("x")
    runs = runs if isinstance(runs, str) else [GridRun(r.name, cfg if r.config == "cfg" else r.config, r.share)
                                               for r in runs]
    root = tmp_path / "grid"
    with pytest.raises(SibaError) as exc:
        run_grid(runs, root, **kwargs)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert not root.exists()


def test_the_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    with pytest.raises(SibaError, match=r"pip install 'siba\[ray\]'"):
        run_grid([GridRun("a", tiny("a"))], tmp_path / "grid", executor="ray")
    assert not (tmp_path / "grid").exists()


def test_a_victim_task_redoes_no_shared_stage_and_needs_the_shared_file_system(serial_grid, tmp_path):
    run = tmp_path / "a"
    shutil.copytree(serial_grid[0] / "a", run)
    shutil.rmtree(run / "victims")
    other = tiny("a", surrogate_train={"lr": 0.1})  # as a node that computes another key for the surrogate
    error, _ = _train_victim(other, str(run), "siba@0.05", None)
    assert "the shared stage" in error and "does not match what this Ray worker computes" in error
    assert not (run / "victims").exists()
    assert (run / "surrogate/model.safetensors").read_bytes() == \
        (serial_grid[0] / "a/surrogate/model.safetensors").read_bytes()
    error, _ = _train_victim(other, str(tmp_path / "elsewhere"), "siba@0.05", None)
    assert "is not visible on the Ray node" in error and not (tmp_path / "elsewhere").exists()


@pytest.mark.slow  # ~35 s on a loaded 2-core machine: Ray's start, a worker per CPU importing torch, 3 victims
def test_the_ray_executor_gives_the_serial_grids_results(serial_grid, tmp_path, monkeypatch):
    """Every victim a task on a local Ray instance, the gather pass on the driver: the same numbers and
    the same weights as the serial grid (fp32, one thread each)."""
    import ray  # the siba[ray] extra, which scripts/setup.sh installs

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SIBA_THREADS", "1")  # the driver's shared stages; each task gets cpus_per_task=1
    root = tmp_path / "ray"
    lines: list[str] = []
    results = run_grid(grid_runs(), root, executor="ray", log=lines.append, progress=False)
    assert not ray.is_initialized()  # the instance it started is shut down
    done = [s.split() for s in lines if s.startswith("[grid]") and " done (" in s]  # in the order they finished
    assert sorted(f"{run} {victim}" for _, run, victim, _, _ in done) == ["a badnets@0.05", "a siba@0.05", "b siba@0.1"]
    assert [k for *_, k in done] == ["(1/3)", "(2/3)", "(3/3)"]
    assert not any("training" in s for s in lines if s.startswith("[b] [surrogate]"))
    assert not any("the gather pass redid" in s for s in lines)
    serial_root, serial_results, _ = serial_grid
    for name in ("a", "b"):
        assert comparable(results[name]) == comparable(serial_results[name]), name
        assert json.loads((root / name / "results.json").read_text()) == results[name]
        assert victim_weights(root / name) == victim_weights(serial_root / name), name
        assert {p.name for p in (root / name).iterdir()} == {p.name for p in (serial_root / name).iterdir()}


@pytest.mark.parametrize("executor", ["serial", "ray"])
def test_a_grid_with_reuse_copies_every_finished_stage_and_trains_nothing(serial_grid, tmp_path, monkeypatch, executor):
    """``reuse``: the serial grid's folder offers every stage (victims included) by content key; a grid of the
    same runs elsewhere copies them all, sends no Ray task, and reports the same numbers."""
    if executor == "ray":
        pytest.importorskip("ray")
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SIBA_THREADS", "1")
    serial_root, serial_results, _ = serial_grid
    runs = [GridRun(r.name, r.config) for r in grid_runs()]  # no share: everything comes from the pool
    lines: list[str] = []
    results = run_grid(runs, tmp_path / "again", executor=executor, log=lines.append, progress=False,
                       reuse=[serial_root])
    assert not any("] training " in s or "making the trigger" in s for s in lines), lines
    reused = sorted(s.split("] [")[1].split("]")[0] for s in lines if "reused from" in s)
    assert reused == ["badnets", "badnets @ 0.05", "siba", "siba", "siba @ 0.05", "siba @ 0.1", "surrogate",
                      "surrogate"]
    for name in ("a", "b"):
        assert comparable(results[name]) == comparable(serial_results[name]), name
