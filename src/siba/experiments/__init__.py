"""Experiments: YAML run configs and the pipeline behind ``siba run``."""

from .config import ModelStage, RunConfig, load_config, parse_config
from .pipeline import Pipeline, run_config

__all__ = ["ModelStage", "Pipeline", "RunConfig", "load_config", "parse_config", "run_config"]
