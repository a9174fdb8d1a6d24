"""What a run folder belongs to: the recipe's fingerprint and the resume state it guards.

A run is resumable: started again with the same recipe after a crash, it continues from its
:class:`~mtl_keras.training.callbacks.TrainingBackup` and ends with the weights of an
uninterrupted run. The fingerprint is the part of the recipe that determines those weights.
"""

from __future__ import annotations

import os

from mtl_keras.training.callbacks import TrainingBackup
from mtl_keras.training.recipe import Recipe

#: Recipe fields that do not change the trained weights: a resume state ignores them.
NOT_IN_FINGERPRINT = (
    "run_dir",
    "export_dir",
    "export_version",
    "baselines",
    "image_summaries",
    "strategy",
    "worker_timeout",
    "resume",
    "deterministic",
    "jit_compile",
)


def fingerprint(recipe: Recipe) -> dict:
    """The recipe fields that determine the trained weights (what a resume state must match)."""
    return {k: v for k, v in recipe.to_dict().items() if k not in NOT_IN_FINGERPRINT}


def training_backup(recipe: Recipe, *, write: bool) -> TrainingBackup:
    """The resume state of ``recipe``'s run, in ``<output_dir>/backup`` (``write``: the chief)."""
    return TrainingBackup(
        os.path.join(recipe.output_dir, "backup"), fingerprint=fingerprint(recipe), write=write
    )
