"""What a run reports: validation metrics, Δ_MTL, a readable table and ``results.json``."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtl_keras.metrics import count_flops, count_params, delta_mtl, load_baselines, write_results
from mtl_keras.tasks import TaskSpec
from mtl_keras.training.model import MultiTaskModel
from mtl_keras.training.recipe import Recipe


def primary_metrics(specs: dict[str, TaskSpec]) -> dict[str, bool]:
    """``{metric id: higher is better}`` of every task's primary metric (what Δ_MTL averages)."""
    return {
        s.metric_id(s.primary_metric): s.higher_is_better[s.primary_metric] for s in specs.values()
    }


def format_table(
    results: dict,
    baseline: dict | None,
    specs: dict[str, TaskSpec],
    single_task: dict | None = None,
) -> str:
    """A readable table: task, metric, model, trivial baseline, better-is direction.

    With ``single_task`` (the single-task results Δ_MTL compares with, :func:`read_baselines`)
    a ``single-task`` column follows the trivial baseline's.
    """

    def cell(values: dict | None, key: str) -> str:
        return f"{values[key]:>11.4f}" if values and key in values else f"{'-':>11}"

    extra = f" {'single-task':>11}" if single_task is not None else ""
    lines = [f"{'task':<12} {'metric':<14} {'model':>10} {'baseline':>11}{extra}  better"]
    for t, spec in specs.items():
        for key, higher in spec.higher_is_better.items():
            mid = spec.metric_id(key)
            if mid not in results:
                continue
            base = cell(baseline, mid) + (f" {cell(single_task, mid)}" if extra else "")
            lines.append(
                f"{t:<12} {key:<14} {results[mid]:>10.4f} {base}  {'higher' if higher else 'lower'}"
            )
    return "\n".join(lines)


def evaluate_model(model: MultiTaskModel, val: tf.data.Dataset) -> dict:
    """``{metric id: value}`` of ``model`` on ``val`` (and the losses), as floats."""
    logs = model.evaluate(val, return_dict=True, verbose=0)
    return {k: float(np.mean(v)) for k, v in logs.items()}


def read_baselines(
    recipe: Recipe, specs: dict[str, TaskSpec], protocol=None
) -> dict[str, float] | None:
    """The single-task results ``recipe.baselines`` names, checked for Δ_MTL before a run trains.

    Returns ``None`` when the recipe names no baselines. With ``protocol`` (a resolved evaluation
    protocol, `mtl_keras.evaluation.protocol.get_protocol`) each task's primary metric is the
    protocol's (``TaskSpec.evaluation_primary``).

    Raises:
        FileNotFoundError: a named file or folder does not exist.
        ValueError: the files lack a task's primary metric, or it is 0 (its relative change is
            undefined); the files, the task and the metric are named.
    """
    if not recipe.baselines:
        return None
    values = load_baselines(recipe.baselines)
    for spec in specs.values():
        if protocol is None:
            key = spec.metric_id(spec.primary_metric)
            compared, fix = (
                "",
                ("add that task's single-task results.json to baselines, or set baselines=null"),
            )
        else:
            key = spec.metric_id(spec.evaluation_primary(protocol)[0])
            compared = f" under protocol {protocol.name!r}"
            fix = (
                f"evaluate the single-task runs with mtl-keras evaluate --protocol "
                f"{protocol.name} and pass their protocol.json as --baselines, or drop --baselines"
            )
        if key not in values:
            raise ValueError(
                f"recipe {recipe.name!r}: baselines={recipe.baselines!r} has no {key!r}, the "
                f"metric of task {spec.name!r} that Δ_MTL compares{compared} (found: "
                f"{sorted(values)}); {fix}"
            )
        if values[key] == 0.0:
            raise ValueError(
                f"recipe {recipe.name!r}: baselines={recipe.baselines!r} gives {key!r} (task "
                f"{spec.name!r}) as 0, so Δ_MTL's relative change is undefined; check that "
                "task's single-task result file"
            )
    return values


def summarise(
    recipe: Recipe,
    network: keras.Model,
    specs: dict[str, TaskSpec],
    results: dict,
    baseline: dict,
    baselines: dict[str, float] | None = None,
    **fields,
) -> dict:
    """The run's summary: metrics, trivial baseline, ``fields``, size, FLOPs and Δ_MTL.

    Δ_MTL (over every task's primary metric) is there when ``baselines`` (single-task metrics,
    :func:`read_baselines`) are given.
    """
    summary = {
        "recipe": recipe.name,
        "metrics": results,
        "trivial_baseline": baseline,
        **fields,
        **count_params(network),
        "flops": count_flops(network, (*recipe.image_size, 3)),
    }
    if baselines is not None:
        summary["delta_mtl"] = delta_mtl(results, baselines, primary_metrics(specs))
    return summary


def write_summary(path: str, summary: dict) -> str:
    """Write a :func:`summarise` summary as a result file (``metrics`` and the other fields)."""
    extra = {k: v for k, v in summary.items() if k not in ("metrics", "recipe")}
    return write_results(path, summary["recipe"], summary["metrics"], **extra)
