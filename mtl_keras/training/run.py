"""Running a recipe: build, train with ``model.fit``, evaluate, compare, export.

A run is reproducible and resumable: the recipe's ``seed`` flows to initialisation, shuffling
and stochastic balancers; the training stream is one seeded sequence of epochs, so a run resumed
from its :class:`~mtl_keras.training.callbacks.TrainingBackup` after a crash skips exactly the
epochs already trained and ends with the weights of an uninterrupted run.

The pieces live beside this module: :mod:`~mtl_keras.training.building` (data, specs, network,
trainer), :mod:`~mtl_keras.training.baselines` (single-task runs, trivial baseline),
:mod:`~mtl_keras.training.reports` (metrics, table, results) and
:mod:`~mtl_keras.training.resume` (fingerprint, resume state).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from mtl_keras.export import export_saved_model
from mtl_keras.training import distribute
from mtl_keras.training.baselines import (
    initialise_from_single_task,
    missing_single_task_runs,
    trivial_baseline,
)
from mtl_keras.training.building import (
    auxiliary_specs,
    build_model,
    load_data,
    set_seed,
    steps_per_epoch,
    task_specs,
)
from mtl_keras.training.callbacks import AtomicCheckpoint, NonFiniteLossGuard, PredictionImages
from mtl_keras.training.distribute import make_strategy
from mtl_keras.training.event_logs import DurableTensorBoard, LogCommit, recorded, roll_back
from mtl_keras.training.hparams import write_final_metrics, write_hparams
from mtl_keras.training.precision import precision_policy
from mtl_keras.training.recipe import Recipe
from mtl_keras.training.reports import (
    evaluate_model,
    format_table,
    read_baselines,
    summarise,
    write_summary,
)
from mtl_keras.training.resume import (
    RESULTS_FILE,
    claim_run_folder,
    finished_summary,
    training_backup,
)

__all__ = ["train"]


def train(
    recipe: Recipe,
    *,
    verbose: int | str = "auto",
    export: bool = True,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict:
    """Run a recipe end to end; returns a summary dict (metrics, baseline, paths).

    The strategy is created first (a multi-worker strategy must exist before any TensorFlow
    operation runs). With ``recipe.init_from_single_task="train"`` the single-task runs that
    initialise the network (:func:`~mtl_keras.training.baselines.single_task_recipe`) are trained
    first where not yet done, under the same strategy and without export. With ``recipe.resume``
    (the default) a run killed part-way continues, when started again with the same recipe, from
    the end of its last complete epoch and ends with the weights of an uninterrupted run; the
    resume state is removed once the run has finished. A finished run (its ``results.json`` and
    no resume state, :func:`~mtl_keras.training.resume.finished_summary`) is reported, not
    trained again: the summary read back has ``already_finished`` set, and nothing is written or
    exported (:func:`~mtl_keras.training.resume.new_run` gives a recipe a new run folder).
    The chief records the recipe's HParams and the final metrics in the TensorBoard logs
    (:mod:`~mtl_keras.training.hparams`).
    Under a multi-worker strategy every worker trains, but only the chief writes files.

    Before anything trains, the ``baselines`` files are checked for every task's metric
    (:func:`~mtl_keras.training.reports.read_baselines`), and each run folder is claimed once
    its model is built (:func:`~mtl_keras.training.resume.claim_run_folder`): one recorded for
    other settings is refused, and temporaries of an interrupted checkpoint or export are removed.

    Args:
        recipe: the experiment.
        verbose: Keras ``fit`` verbosity.
        export: write a SavedModel at the end (chief only).
        callbacks: extra Keras callbacks for ``fit``.
    """
    strategy = make_strategy(recipe.strategy, worker_timeout=recipe.worker_timeout)
    distribute.check_batch_size(recipe.batch_size, strategy)
    if recipe.deterministic:
        tf.config.experimental.enable_op_determinism()
    baselines = read_baselines(recipe, task_specs(recipe))
    for single in missing_single_task_runs(recipe):
        _run(single, strategy, verbose, False, [])
    return _run(recipe, strategy, verbose, export, callbacks or [], baselines)


def _run(recipe, strategy, verbose, export, extra_callbacks, baselines=None) -> dict:
    set_seed(recipe.seed)
    chief = distribute.is_chief(strategy)
    # non-chief workers write their (identical) logs and checkpoints to a private folder
    out = recipe.output_dir if chief else tempfile.mkdtemp(prefix="mtl-keras-worker-")
    try:
        with precision_policy(recipe.precision):
            return _train(recipe, strategy, out, chief, verbose, export, extra_callbacks, baselines)
    finally:
        if not chief:
            shutil.rmtree(out, ignore_errors=True)


def _train(recipe, strategy, out, chief, verbose, export, extra_callbacks, baselines) -> dict:
    finished = finished_summary(recipe)
    if finished is not None:  # reported, not trained again (mtl-keras train --new-run trains anew)
        table_baseline = finished.get("trivial_baseline")
        finished["table"] = format_table(
            finished["metrics"], table_baseline, task_specs(recipe), baselines
        )
        return finished
    bundle = load_data(recipe)
    specs = task_specs(recipe, bundle.task_options)
    steps = steps_per_epoch(recipe, bundle.train)
    with strategy.scope():
        model = build_model(
            recipe, specs, steps * recipe.epochs, auxiliary_specs(recipe, bundle.task_options)
        )
    # before the restore: a resumed run's own state wins
    initialised_from = initialise_from_single_task(recipe, model.network, specs)
    # once the recipe has proved buildable: a recipe with a typo claims no folder
    claim_run_folder(recipe, write=chief)
    os.makedirs(out, exist_ok=True)
    backup = training_backup(recipe, write=chief)
    initial_epoch = backup.restore(model) if recipe.resume else 0
    logs = os.path.join(out, "tensorboard")
    # logs of epochs after the resume state are written again
    resumed_logs = chief and recipe.resume and recorded(backup.directory, initial_epoch)
    if chief and recipe.resume:
        roll_back(logs, backup.directory, initial_epoch)
    if chief and not resumed_logs:  # once per run: the start record holds them
        write_hparams(logs, recipe)
    # a checkpoint in the folder is this run's only when resuming (a finished run's is not)
    checkpoint = AtomicCheckpoint(os.path.join(out, "checkpoints"), resumed=initial_epoch > 0)
    images, labels = next(iter(bundle.val.take(1)))
    callbacks = [
        NonFiniteLossGuard(specs, checkpoint),
        checkpoint,
        DurableTensorBoard(log_dir=logs, write_graph=False),
        PredictionImages(
            os.path.join(out, "tensorboard"),
            images.numpy(),
            {t: v.numpy() for t, v in labels.items()},
            specs,
            recipe.image_summaries,
        ),
        *extra_callbacks,
    ]
    if recipe.resume:
        commit = LogCommit(logs, backup.directory, initial_epoch=initial_epoch, write=chief)
        callbacks += [commit, backup]
    # one seeded stream of epochs: epoch k of every run (resumed or not) sees the same batches;
    # each worker of a multi-worker run decodes only its replicas' share of them
    stream = distribute.training_stream(bundle, strategy, initial_epoch * steps)
    try:
        model.fit(
            stream,
            validation_data=bundle.val,
            initial_epoch=initial_epoch,
            epochs=recipe.epochs,
            steps_per_epoch=steps,
            shuffle=False,  # the stream is shuffled (seeded) by the data pipeline
            callbacks=callbacks,
            verbose=verbose,
        )
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as err:
        if not distribute.is_multi_worker(strategy):
            raise
        state = backup.read_state()
        reason = " ".join(re.sub(r"\{\{function_node [^}]*\}\}", "", str(err)).split()[:40])
        raise distribute.WorkerLostError(
            f"a worker stopped during training ({reason}); start every worker again with the "
            f"same command to resume from epoch {state['epoch'] if state else 0}"
        ) from None
    results = evaluate_model(model, bundle.val)
    # the chief reports it: other workers read no training-label sample
    baseline = trivial_baseline(specs, bundle.train_labels, bundle.val) if chief else None
    summary = summarise(
        recipe,
        model.network,
        specs,
        results,
        baseline,
        baselines,
        checkpoint=checkpoint.path if chief and checkpoint.written else None,
        resumed_from_epoch=initial_epoch,
        init_from_single_task=initialised_from,
        replicas=strategy.num_replicas_in_sync,
    )
    # a run killed between its export and its results does not export again when restarted
    exported = (backup.read_state() or {}).get("export")
    if export and chief:
        summary["export"] = exported or export_saved_model(
            model.network,
            specs,
            recipe.export_dir,
            recipe.name,
            image_size=recipe.image_size,
            version=recipe.export_version,
        )
        backup.note(export=summary["export"])
    if chief:  # last, naming the export: a run is finished once it is there
        write_summary(os.path.join(out, RESULTS_FILE), summary)
        final = {**results, **{k: summary[k] for k in ("delta_mtl",) if k in summary}}
        write_final_metrics(os.path.join(out, "tensorboard"), final, step=recipe.epochs)
    backup.clear()
    summary["table"] = format_table(results, baseline, specs, baselines)
    return summary
