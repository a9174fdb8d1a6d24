"""Training: the multi-task trainer, recipes, callbacks, scale-out and the run loop."""

from mtl_keras.training.callbacks import (
    AtomicCheckpoint,
    NonFiniteLossError,
    NonFiniteLossGuard,
    PredictionImages,
    ResumeStateError,
    TrainingBackup,
    atomic_save_weights,
)
from mtl_keras.training.cluster import ClusterConfigError
from mtl_keras.training.distribute import WorkerLostError, WorkerTimeoutError, make_strategy
from mtl_keras.training.gradient_paths.bilevel import with_held_out
from mtl_keras.training.model import LabelError, MultiTaskModel
from mtl_keras.training.precision import precision_policy
from mtl_keras.training.recipe import Recipe

__all__ = [
    "AtomicCheckpoint",
    "ClusterConfigError",
    "LabelError",
    "MultiTaskModel",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PredictionImages",
    "Recipe",
    "ResumeStateError",
    "TrainingBackup",
    "WorkerLostError",
    "WorkerTimeoutError",
    "atomic_save_weights",
    "make_strategy",
    "precision_policy",
    "with_held_out",
]
