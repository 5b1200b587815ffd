"""The one trainer that serves surrogates, victims and defenses."""

from .trainer import TrainConfig, TrainResult, accuracy, predict, read_metrics, train

__all__ = ["TrainConfig", "TrainResult", "accuracy", "predict", "read_metrics", "train"]
