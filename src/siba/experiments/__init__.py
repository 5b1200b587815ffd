"""Experiments: YAML run configs, the pipeline behind ``siba run``, and grids of runs."""

from .config import ModelStage, RunConfig, load_config, parse_config
from .grid import GridRun, run_grid
from .pipeline import Pipeline, run_config

__all__ = ["GridRun", "ModelStage", "Pipeline", "RunConfig", "load_config", "parse_config", "run_config", "run_grid"]
