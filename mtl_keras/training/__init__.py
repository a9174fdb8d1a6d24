"""Training: the multi-task trainer, recipes, callbacks and the run loop."""

from mtl_keras.training.callbacks import (
    AtomicCheckpoint,
    NonFiniteLossError,
    NonFiniteLossGuard,
    PredictionImages,
    atomic_save_weights,
)
from mtl_keras.training.model import LabelError, MultiTaskModel
from mtl_keras.training.recipe import Recipe

__all__ = [
    "AtomicCheckpoint",
    "LabelError",
    "MultiTaskModel",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PredictionImages",
    "Recipe",
    "atomic_save_weights",
]
