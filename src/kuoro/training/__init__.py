"""A small training API: a Trainer with callbacks, and metrics watched while training."""

from kuoro.training.callbacks import (
    Callback,
    Checkpoint,
    CheckpointError,
    EarlyStopping,
    History,
    ProgressBar,
    TrainingState,
    load_checkpoint,
)
from kuoro.training.metrics import F1AtK, MeanLoss, Metric, NDCGAtK, RankingBatch
from kuoro.training.trainer import Trainer, seed_everything

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "EarlyStopping",
    "F1AtK",
    "History",
    "MeanLoss",
    "Metric",
    "NDCGAtK",
    "ProgressBar",
    "RankingBatch",
    "Trainer",
    "TrainingState",
    "load_checkpoint",
    "seed_everything",
]
