"""Baselines of a run: its single-task runs and the trivial best-constant predictors.

As the survey's (Vandenhende et al., TPAMI 2022, Sec. 5), the single-task baselines train the
recipe's data, backbone, head and optimisation with one task each; soft-sharing networks may
start from them (``Recipe.init_from_single_task``). The trivial baseline predicts, per task, the
constant fitted on the training labels (majority class, mean depth, ...).
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import architectures
from mtl_keras.tasks import TaskSpec
from mtl_keras.training.callbacks import AtomicCheckpoint
from mtl_keras.training.recipe import Recipe
from mtl_keras.training.resume import recorded_differences


def single_task_recipe(recipe: Recipe, task: str) -> Recipe:
    """The single-task run whose network starts ``task``'s column of ``recipe``'s network.

    As the survey's single-task baselines (Vandenhende et al., TPAMI 2022, Sec. 5): the recipe's
    data, backbone, head and optimisation with only ``task`` and its unweighted loss; named
    ``f"{recipe.name}__single_{task}"``, in the same ``run_dir`` (in its own folder of that
    name, shared by every run folder of ``recipe``: ``run_name`` is not inherited).
    """
    return dataclasses.replace(
        recipe,
        name=f"{recipe.name}__single_{task}",
        run_name=None,
        tasks=(task,),
        architecture="single_task",
        architecture_kwargs={},
        init_from_single_task=None,
        balancer="fixed",
        balancer_kwargs={},
        gradient_source="auto",
        baselines=None,
        export_version=None,
    )


def checkpoint_path(recipe: Recipe) -> str:
    """Where a run of ``recipe`` keeps its weights (written after every epoch)."""
    return AtomicCheckpoint(os.path.join(recipe.output_dir, "checkpoints")).path


def single_task_checkpoints(recipe: Recipe) -> dict[str, str] | None:
    """``{task: checkpoint}`` that start the recipe's network, or ``None`` (from scratch)."""
    init = recipe.init_from_single_task
    if init is None:
        return None
    if isinstance(init, dict):
        return {t: str(init[t]) for t in recipe.tasks}
    return {t: checkpoint_path(single_task_recipe(recipe, t)) for t in recipe.tasks}


def missing_single_task_runs(recipe: Recipe) -> list[Recipe]:
    """The single-task runs ``init_from_single_task="train"`` still has to train.

    A run counts as done once it has written ``results.json`` (at its end; an interrupted one is
    trained again, resuming from its backup). A done run trained with other settings than
    :func:`single_task_recipe` derives now is refused rather than silently used.
    """
    if recipe.init_from_single_task != "train":
        return []
    missing = []
    for task in recipe.tasks:
        single = single_task_recipe(recipe, task)
        done = os.path.join(single.output_dir, "results.json")
        if not (os.path.exists(done) and os.path.exists(checkpoint_path(single))):
            missing.append(single)
            continue
        differ = recorded_differences(single.output_dir, single)
        if differ != []:
            settings = f"other {differ}" if differ else "unrecorded settings (no recipe.json)"
            raise ValueError(
                f"the single-task run {single.output_dir!r} that initialises {recipe.name!r} was "
                f"trained with {settings}; remove that folder to train it again, or pass "
                "init_from_single_task={task: checkpoint path}"
            )
    return missing


def initialise_from_single_task(
    recipe: Recipe, network: keras.Model, specs: dict[str, TaskSpec]
) -> dict[str, str] | None:
    """Copy the recipe's single-task checkpoints into ``network``'s task columns and heads.

    Returns ``{task: checkpoint}`` used, or ``None`` when the recipe starts from scratch.
    """
    checkpoints = single_task_checkpoints(recipe)
    if checkpoints is None:
        return None
    sources = architectures.load_single_task_networks(
        specs,
        checkpoints,
        backbone=recipe.backbone,
        backbone_kwargs=recipe.backbone_kwargs,
        head=recipe.head,
        head_kwargs=recipe.head_kwargs,
        image_size=recipe.image_size,
    )
    architectures.init_from_single_task(network, sources)
    return checkpoints


def trivial_baseline(specs: dict[str, TaskSpec], train_labels: dict, val: tf.data.Dataset) -> dict:
    """Metrics of constant predictors fitted on training labels (majority class, mean depth...)."""
    results = {}
    for t, spec in specs.items():
        const = tf.constant(spec.baseline(np.asarray(train_labels[t])), tf.float32)
        metrics = spec.metrics()
        for _, labels in val:
            shape = tf.concat([tf.shape(labels[t])[:3], [spec.channels]], 0)
            pred = spec.activate(tf.broadcast_to(const, shape))
            for m in metrics:
                m.update_state(labels[t], pred)
        for m in metrics:
            results.update({spec.metric_id(k): float(v) for k, v in m.result().items()})
    return results
