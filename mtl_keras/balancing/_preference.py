"""Preference vectors of the scalarizations (STCH, PBI, COSMOS): given once, checked at setup."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import tensorflow as tf

Preference = Sequence[float] | Mapping[str, float] | None


def stored(preference: Preference):
    """The constructor argument as ``get_config`` returns it (a dict, a list or ``None``)."""
    if preference is None:
        return None
    if isinstance(preference, Mapping):
        return {str(k): float(v) for k, v in preference.items()}
    return [float(v) for v in preference]


def preference_vector(preference: Preference, task_names, method: str) -> tf.Tensor:
    """(T,) float32 preference in task order; ``None`` gives the uniform ``1/T``.

    A sequence gives one value per task in task order, a mapping one value by task name (every
    task named). Every value must be positive and finite.
    """
    names = list(task_names)
    t = len(names)
    example = ", ".join(["1.0"] * t)
    if preference is None:
        values = [1.0 / t] * t
    elif isinstance(preference, Mapping):
        unknown = sorted(set(preference) - set(names))
        missing = [n for n in names if n not in preference]
        if unknown or missing:
            raise ValueError(
                f"{method} preference names {sorted(preference)}, but the tasks are {names} "
                f"(unknown: {unknown}, missing: {missing}); give one value per task"
            )
        values = [float(preference[n]) for n in names]
    else:
        values = [float(v) for v in preference]
        if len(values) != t:
            raise ValueError(
                f"{method} preference has {len(values)} values for {t} tasks {names}; give one "
                f"positive value per task in task order, e.g. preference=[{example}]"
            )
    bad = [n for n, v in zip(names, values) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(
            f"{method} preference must be positive and finite for every task; got "
            f"{dict(zip(names, values))} (bad: {bad})"
        )
    return tf.constant(values, tf.float32)
