"""Training: the loop, its configuration, run folders (atomic, weights-only, resumable) and Accelerate."""
from lopt_core.training.config import TrainConfig
from lopt_core.training.runs import RunFolder, load_run
from lopt_core.training.trainer import FitResult, Trainer, TrainingDiverged

__all__ = ["FitResult", "RunFolder", "TrainConfig", "Trainer", "TrainingDiverged", "load_run"]
