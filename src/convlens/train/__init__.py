"""Training: the loop, optimisers and schedules, checkpoints, metrics, evaluation."""

from .evaluate import evaluate_split, predict
from .loop import Stop, evaluate_run, train

__all__ = ["Stop", "evaluate_run", "evaluate_split", "predict", "train"]
