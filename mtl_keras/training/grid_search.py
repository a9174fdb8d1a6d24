"""Grid search over fixed task weights, ranked by Δ_MTL (Vandenhende et al., TPAMI 2022, Sec. 6).

The survey tunes the fixed weights of its baselines with short trainings over a grid of weight
vectors and keeps the vector with the best multi-task score Δ_MTL against single-task results.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence

from mtl_keras.metrics import delta_mtl
from mtl_keras.training import building, reports, run
from mtl_keras.training.recipe import Recipe


def weight_grid(tasks: Sequence[str], values: Iterable[float]) -> list[dict[str, float]]:
    """Every assignment of ``values`` to the tasks (``len(values) ** len(tasks)`` vectors)."""
    values = list(values)
    return [dict(zip(tasks, combo)) for combo in itertools.product(values, repeat=len(tasks))]


def grid_search(
    recipe: Recipe,
    candidates: Sequence[Mapping[str, float]],
    baselines: Mapping[str, float],
    *,
    epochs: int | None = None,
    verbose: int = 0,
) -> list[dict]:
    """Train ``recipe`` once per weight vector and rank the runs by Δ_MTL (best first).

    Args:
        recipe: the experiment; its balancer is replaced by ``fixed`` with each candidate.
        candidates: weight vectors keyed by task name.
        baselines: single-task results keyed by metric id (e.g. ``{"semseg_miou": 0.41}``), as
            read by :func:`mtl_keras.metrics.load_baselines`.
        epochs: length of each short training (default: the recipe's).
        verbose: Keras verbosity of each training.

    Returns:
        one dict per candidate: ``{"weights", "delta_mtl", "metrics"}``, sorted by Δ_MTL.
    """
    if not candidates:
        raise ValueError("grid_search needs at least one weight vector")
    ranked = []
    for i, weights in enumerate(candidates):
        trial = dataclasses.replace(
            recipe,
            name=f"{recipe.name}_grid{i}",
            run_name=None,  # each trial in its own folder, named after it
            balancer="fixed",
            balancer_kwargs={"weights": dict(weights)},
            epochs=epochs or recipe.epochs,
        )
        summary = run.train(trial, verbose=verbose, export=False)
        specs = building.task_specs(trial)
        score = delta_mtl(summary["metrics"], baselines, reports.primary_metrics(specs))
        ranked.append({"weights": dict(weights), "delta_mtl": score, "metrics": summary["metrics"]})
    return sorted(ranked, key=lambda r: r["delta_mtl"], reverse=True)
