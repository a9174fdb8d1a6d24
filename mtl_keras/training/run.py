"""Running a recipe: build, train with ``model.fit``, evaluate, compare, export."""

from __future__ import annotations

import json
import os
import random

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import architectures, data
from mtl_keras.export import export_saved_model
from mtl_keras.metrics import count_flops, count_params, delta_mtl, load_baselines, write_results
from mtl_keras.tasks import TaskSpec, resolve
from mtl_keras.training.callbacks import (
    AtomicCheckpoint,
    NonFiniteLossGuard,
    PredictionImages,
)
from mtl_keras.training.model import MultiTaskModel
from mtl_keras.training.recipe import Recipe

STRATEGIES = ("default", "mirrored")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")


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
        recipe.tasks,
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


def build_network(recipe: Recipe, specs: dict[str, TaskSpec]) -> keras.Model:
    return architectures.build(
        recipe.architecture,
        list(specs.values()),
        backbone=recipe.backbone,
        backbone_kwargs=recipe.backbone_kwargs,
        head=recipe.head,
        head_kwargs=recipe.head_kwargs,
        image_size=recipe.image_size,
    )


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


def build_model(recipe: Recipe, specs: dict[str, TaskSpec], steps: int) -> MultiTaskModel:
    """Network, trainer and optimizer (inside the current strategy's scope)."""
    network = build_network(recipe, specs)
    model = MultiTaskModel(
        network,
        list(specs.values()),
        recipe.balancer,
        balancer_kwargs=recipe.balancer_kwargs,
        gradient_source=recipe.gradient_source,
    )
    model.compile(
        optimizer=make_optimizer(recipe, steps), jit_compile=resolve_jit(recipe.jit_compile)
    )
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


def train(recipe: Recipe, *, verbose: int | str = "auto", export: bool = True) -> dict:
    """Run a recipe end to end; returns a summary dict (metrics, baseline, paths)."""
    set_seed(recipe.seed)
    strategy = make_strategy(recipe.strategy)
    bundle = load_data(recipe)
    specs = task_specs(recipe, bundle.task_options)
    steps_per_epoch = recipe.steps_per_epoch or int(bundle.train.cardinality())
    total = steps_per_epoch * recipe.epochs
    out = recipe.output_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "recipe.json"), "w") as f:
        json.dump(recipe.to_dict(), f, indent=2, default=str)
    with strategy.scope():
        model = build_model(recipe, specs, total)
    ckpt_dir = os.path.join(out, "checkpoints")
    checkpoint = AtomicCheckpoint(ckpt_dir)
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
    ]
    train_ds = bundle.train.repeat() if recipe.steps_per_epoch else bundle.train
    model.fit(
        train_ds,
        validation_data=bundle.val,
        epochs=recipe.epochs,
        steps_per_epoch=recipe.steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    results = evaluate_model(model, bundle.val)
    baseline = trivial_baseline(specs, bundle.train_labels, bundle.val)
    summary = {
        "recipe": recipe.name,
        "metrics": results,
        "trivial_baseline": baseline,
        "checkpoint": checkpoint.path,
        **count_params(model.network),
        "flops": count_flops(model.network, (*recipe.image_size, 3)),
    }
    if recipe.baselines:
        summary["delta_mtl"] = delta_mtl(
            results, load_baselines(recipe.baselines), primary_metrics(specs)
        )
    write_results(
        os.path.join(out, "results.json"),
        recipe.name,
        results,
        **{k: v for k, v in summary.items() if k not in ("metrics", "recipe")},
    )
    if export:
        summary["export"] = export_saved_model(
            model.network,
            specs,
            recipe.export_dir,
            recipe.name,
            image_size=recipe.image_size,
            version=recipe.export_version,
        )
    summary["table"] = format_table(results, baseline, specs)
    return summary
