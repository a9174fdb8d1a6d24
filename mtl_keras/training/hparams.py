"""A run's hyperparameters and final metrics in TensorBoard's HParams dashboard.

``tensorboard --logdir runs`` then shows every run as one row of a table: its recipe (balancer,
architecture, backbone, learning rate, ...) next to its final validation metrics, so runs with
different balancers compare side by side. Each run folder's ``tensorboard/`` is one HParams
session: :func:`write_hparams` records the recipe there when the run starts, and
:func:`write_final_metrics` the validation metrics of the trained model (``final/<metric id>``,
and ``final/delta_mtl`` when baselines are given) at its end. No experiment summary
(``hparams_config``) is written: it would be one run's, while the dashboard infers the columns
from every run under ``--logdir``. The per-epoch curves Keras writes (``train/``,
``validation/``) are columns too.

Example:
    >>> write_hparams("runs/demo/tensorboard", recipe)  # doctest: +SKIP
    >>> write_final_metrics("runs/demo/tensorboard", {"semseg_miou": 0.4}, 10)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from mtl_keras.training.recipe import Recipe
from mtl_keras.training.resume import fingerprint

#: the tag prefix of the final metrics (a section of their own in the Scalars dashboard)
FINAL = "final/"


def recipe_hparams(recipe: Recipe) -> dict[str, bool | int | float | str]:
    """The HParams of ``recipe``: its fingerprint fields (those that change the trained weights).

    Numbers, booleans and strings are kept as they are; lists and dicts (``tasks``,
    ``balancer_kwargs``, ...) become their JSON text, as ``--set`` takes them; unset (``None``)
    fields are left out, an empty cell in the table.
    """
    values = {}
    for key, value in fingerprint(recipe).items():
        if value is None:
            continue
        if isinstance(value, (bool, int, float, str)):
            values[key] = value
        else:
            values[key] = json.dumps(value, sort_keys=True, default=str)
    return values


def write_hparams(logdir: str, recipe: Recipe) -> None:
    """Record ``recipe``'s HParams in ``logdir`` (one session, named after the run folder)."""
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp.hparams(recipe_hparams(recipe), trial_id=recipe.output_dir)
    writer.close()


def write_final_metrics(logdir: str, metrics: Mapping[str, float], step: int) -> None:
    """Write ``metrics`` (``{metric id: value}``) as ``final/<metric id>`` scalars at ``step``."""
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for key, value in metrics.items():
            tf.summary.scalar(FINAL + key, float(value), step=step)
    writer.close()
