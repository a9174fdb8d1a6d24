"""Running a recipe: build, train with ``model.fit``, evaluate, compare, export.

A run is reproducible and resumable: the recipe's ``seed`` flows to initialisation, shuffling
and stochastic balancers; the training stream is one seeded sequence of epochs, so a run resumed
from its :class:`~mtl_keras.training.callbacks.TrainingBackup` after a crash skips exactly the
epochs already trained and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import random
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import architectures, balancing, data
from mtl_keras.architectures.astmt import task_features
from mtl_keras.export import export_saved_model
from mtl_keras.metrics import count_flops, count_params, delta_mtl, load_baselines, write_results
from mtl_keras.tasks import TaskSpec, resolve
from mtl_keras.training import distribute
from mtl_keras.training.adversarial import AdversarialMultiTaskModel
from mtl_keras.training.callbacks import (
    AtomicCheckpoint,
    NonFiniteLossGuard,
    PredictionImages,
    TrainingBackup,
    atomic_write_text,
)
from mtl_keras.training.distribute import make_strategy
from mtl_keras.training.model import MultiTaskModel
from mtl_keras.training.precision import precision_policy
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


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def resolve_jit(value) -> bool:
    """``"auto"``: XLA only where a GPU exists (it is ~3x slower on these CPUs)."""
    if value == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(value)


def load_data(recipe: Recipe) -> data.DataBundle:
    """The recipe's dataset; real datasets also get their folders and augmentation switch."""
    kwargs = {}
    if recipe.dataset != "synthetic":
        kwargs = {
            "data_dir": recipe.data_dir,
            "manual_dir": recipe.manual_dir,
            "augment": recipe.augment,
        }
    return data.load(
        recipe.dataset,
        (*recipe.tasks, *recipe.auxiliary_tasks),
        image_size=recipe.image_size,
        train_examples=recipe.train_examples,
        val_examples=recipe.val_examples,
        batch_size=recipe.batch_size,
        seed=recipe.data_seed,
        shuffle_seed=recipe.seed,
        **kwargs,
    )


def task_specs(recipe: Recipe, bundle_options: dict | None = None) -> dict[str, TaskSpec]:
    options = {**(bundle_options or {}), **recipe.task_options}
    return resolve(recipe.tasks, options)


def auxiliary_specs(recipe: Recipe, bundle_options: dict | None = None) -> dict[str, TaskSpec]:
    """TaskSpecs of the recipe's auxiliary (deep-supervision only) tasks."""
    if not recipe.auxiliary_tasks:
        return {}
    options = {**(bundle_options or {}), **recipe.task_options}
    return resolve(recipe.auxiliary_tasks, options)


def build_network(
    recipe: Recipe, specs: dict[str, TaskSpec], auxiliary: dict[str, TaskSpec] | None = None
) -> keras.Model:
    extra = {"auxiliary_tasks": list(auxiliary.values())} if auxiliary else {}
    return architectures.build(
        recipe.architecture,
        list(specs.values()),
        backbone=recipe.backbone,
        backbone_kwargs=recipe.backbone_kwargs,
        head=recipe.head,
        head_kwargs=recipe.head_kwargs,
        image_size=recipe.image_size,
        **recipe.architecture_kwargs,
        **extra,
    )


def single_task_recipe(recipe: Recipe, task: str) -> Recipe:
    """The single-task run whose network starts ``task``'s column of ``recipe``'s network.

    As the survey's single-task baselines (Vandenhende et al., TPAMI 2022, Sec. 5): the recipe's
    data, backbone, head and optimisation with only ``task`` and its unweighted loss; named
    ``f"{recipe.name}__single_{task}"``, in the same ``run_dir``.
    """
    return dataclasses.replace(
        recipe,
        name=f"{recipe.name}__single_{task}",
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
        with open(os.path.join(single.output_dir, "recipe.json")) as f:
            stored = json.load(f)
        wanted = json.loads(json.dumps(fingerprint(single), default=str))
        differ = sorted(k for k in wanted if stored.get(k) != wanted[k])
        if differ:
            raise ValueError(
                f"the single-task run {single.output_dir!r} that initialises {recipe.name!r} was "
                f"trained with other {differ}; remove that folder to train it again, or pass "
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


def make_optimizer(recipe: Recipe, total_steps: int) -> keras.optimizers.Optimizer:
    lr = recipe.learning_rate
    if recipe.schedule == "poly":
        lr = keras.optimizers.schedules.PolynomialDecay(
            recipe.learning_rate,
            max(total_steps, 1),
            end_learning_rate=0.0,
            power=recipe.poly_power,
        )
    elif recipe.schedule != "constant":
        raise ValueError(f"unknown schedule {recipe.schedule!r}; valid: poly, constant")
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(lr, weight_decay=recipe.weight_decay or None)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=recipe.weight_decay or None)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: adam, sgd")


def balancer_kwargs(recipe: Recipe) -> dict:
    """The recipe's balancer arguments, with ``seed=recipe.seed`` for stochastic balancers.

    Stochastic balancers (RLW, PCGrad, GradDrop, GradVac) draw from ``(seed, step)``; without an
    explicit seed they would pick a random one, so the recipe's seed is passed unless the
    recipe's ``balancer_kwargs`` set one.
    """
    kwargs = dict(recipe.balancer_kwargs)
    balancer_type = type(balancing.get(recipe.balancer, **kwargs))
    if "seed" in inspect.signature(balancer_type).parameters and "seed" not in kwargs:
        kwargs["seed"] = recipe.seed
    return kwargs


def build_model(
    recipe: Recipe,
    specs: dict[str, TaskSpec],
    steps: int,
    auxiliary: dict[str, TaskSpec] | None = None,
) -> MultiTaskModel:
    """Network, trainer and built optimizer (call inside the strategy's scope and the recipe's
    precision policy, see :func:`train`). ``auxiliary``: the specs of the recipe's auxiliary
    tasks (:func:`auxiliary_specs`; default: resolved without dataset options)."""
    if auxiliary is None:
        auxiliary = auxiliary_specs(recipe)
    network = build_network(recipe, specs, auxiliary)
    trainer, adversarial = MultiTaskModel, {}
    if recipe.adversarial_weight > 0:  # ASTMT's discriminator, its reversal ramped over the run
        if not task_features(network):
            raise ValueError(
                f"recipe {recipe.name!r}: adversarial_weight={recipe.adversarial_weight} needs "
                f"per-task TaskFeatures markers, which architecture {recipe.architecture!r} does "
                "not have; use architecture='astmt' or adversarial_weight=0"
            )
        trainer = AdversarialMultiTaskModel
        adversarial = {
            "adversarial_weight": recipe.adversarial_weight,
            "reversal_steps": max(int(steps), 1),
        }
    model = trainer(
        network,
        list(specs.values()),
        recipe.balancer,
        balancer_kwargs=balancer_kwargs(recipe),
        gradient_source=recipe.gradient_source,
        auxiliary_tasks=list(auxiliary.values()),
        auxiliary_weights=recipe.auxiliary_weights,
        gradient_statistics=recipe.gradient_statistics,
        **adversarial,
    )
    model.compile(
        optimizer=make_optimizer(recipe, steps), jit_compile=resolve_jit(recipe.jit_compile)
    )
    distribute.build_optimizer_in_scope(model)
    return model


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


def primary_metrics(specs: dict[str, TaskSpec]) -> dict[str, bool]:
    return {
        s.metric_id(s.primary_metric): s.higher_is_better[s.primary_metric] for s in specs.values()
    }


def format_table(results: dict, baseline: dict | None, specs: dict[str, TaskSpec]) -> str:
    """A readable table: task, metric, model, trivial baseline, better-is direction."""
    lines = [f"{'task':<12} {'metric':<14} {'model':>10} {'baseline':>10}  better"]
    for t, spec in specs.items():
        for key, higher in spec.higher_is_better.items():
            mid = spec.metric_id(key)
            if mid not in results:
                continue
            base = f"{baseline[mid]:>10.4f}" if baseline and mid in baseline else f"{'-':>10}"
            lines.append(
                f"{t:<12} {key:<14} {results[mid]:>10.4f} {base}  {'higher' if higher else 'lower'}"
            )
    return "\n".join(lines)


def evaluate_model(model: MultiTaskModel, val: tf.data.Dataset) -> dict:
    logs = model.evaluate(val, return_dict=True, verbose=0)
    return {k: float(np.mean(v)) for k, v in logs.items()}


def fingerprint(recipe: Recipe) -> dict:
    """The recipe fields that determine the trained weights (what a resume state must match)."""
    return {k: v for k, v in recipe.to_dict().items() if k not in NOT_IN_FINGERPRINT}


def steps_per_epoch(recipe: Recipe, train_ds: tf.data.Dataset) -> int:
    """The recipe's ``steps_per_epoch``, else the number of batches in one pass of the data."""
    if recipe.steps_per_epoch:
        return int(recipe.steps_per_epoch)
    steps = int(train_ds.cardinality())
    if steps == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"recipe {recipe.name!r}: the training data repeats forever; set steps_per_epoch"
        )
    if steps < 0:  # unknown: count one pass
        steps = int(train_ds.reduce(0, lambda n, _: n + 1))
    if steps == 0:
        raise ValueError(
            f"recipe {recipe.name!r}: the training data has no full batch of "
            f"batch_size={recipe.batch_size}; lower batch_size or add examples"
        )
    return steps


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
    initialise the network (:func:`single_task_recipe`) are trained first where not yet done,
    under the same strategy and without export. With ``recipe.resume`` (the default) a run killed
    part-way continues, when started again with the same recipe, from the end of its last
    complete epoch and ends with the weights of an uninterrupted run; the resume state is removed
    once the run has finished.
    Under a multi-worker strategy every worker trains, but only the chief writes files.

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
    for single in missing_single_task_runs(recipe):
        _run(single, strategy, verbose, False, [])
    return _run(recipe, strategy, verbose, export, callbacks or [])


def _run(recipe, strategy, verbose, export, extra_callbacks) -> dict:
    set_seed(recipe.seed)
    chief = distribute.is_chief(strategy)
    # non-chief workers write their (identical) logs and checkpoints to a private folder
    out = recipe.output_dir if chief else tempfile.mkdtemp(prefix="mtl-keras-worker-")
    try:
        with precision_policy(recipe.precision):
            return _train(recipe, strategy, out, chief, verbose, export, extra_callbacks)
    finally:
        if not chief:
            shutil.rmtree(out, ignore_errors=True)


def _train(recipe, strategy, out, chief, verbose, export, extra_callbacks) -> dict:
    bundle = load_data(recipe)
    specs = task_specs(recipe, bundle.task_options)
    steps = steps_per_epoch(recipe, bundle.train)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(
        os.path.join(out, "recipe.json"), json.dumps(recipe.to_dict(), indent=2, default=str)
    )
    with strategy.scope():
        model = build_model(
            recipe, specs, steps * recipe.epochs, auxiliary_specs(recipe, bundle.task_options)
        )
    # before the restore: a resumed run's own state wins
    initialised_from = initialise_from_single_task(recipe, model.network, specs)
    backup = TrainingBackup(
        os.path.join(recipe.output_dir, "backup"), fingerprint=fingerprint(recipe), write=chief
    )
    initial_epoch = backup.restore(model) if recipe.resume else 0
    checkpoint = AtomicCheckpoint(os.path.join(out, "checkpoints"))
    images, labels = next(iter(bundle.val.take(1)))
    callbacks = [
        NonFiniteLossGuard(specs, checkpoint.path),
        checkpoint,
        keras.callbacks.TensorBoard(log_dir=os.path.join(out, "tensorboard"), write_graph=False),
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
        callbacks.append(backup)
    # one seeded stream of epochs: epoch k of every run (resumed or not) sees the same batches
    stream = bundle.train.repeat().skip(initial_epoch * steps)
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
    baseline = trivial_baseline(specs, bundle.train_labels, bundle.val)
    summary = {
        "recipe": recipe.name,
        "metrics": results,
        "trivial_baseline": baseline,
        "checkpoint": checkpoint.path if chief else None,
        "resumed_from_epoch": initial_epoch,
        "init_from_single_task": initialised_from,
        "replicas": strategy.num_replicas_in_sync,
        **count_params(model.network),
        "flops": count_flops(model.network, (*recipe.image_size, 3)),
    }
    if recipe.baselines:
        summary["delta_mtl"] = delta_mtl(
            results, load_baselines(recipe.baselines), primary_metrics(specs)
        )
    if chief:
        write_results(
            os.path.join(out, "results.json"),
            recipe.name,
            results,
            **{k: v for k, v in summary.items() if k not in ("metrics", "recipe")},
        )
    if export and chief:
        summary["export"] = export_saved_model(
            model.network,
            specs,
            recipe.export_dir,
            recipe.name,
            image_size=recipe.image_size,
            version=recipe.export_version,
        )
    backup.clear()
    summary["table"] = format_table(results, baseline, specs)
    return summary
