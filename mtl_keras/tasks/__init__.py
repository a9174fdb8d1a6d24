"""Task registry: ``get(name, **kwargs) -> TaskSpec`` for the six canonical dense tasks and any
task added with `register`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from mtl_keras._names import unknown_message
from mtl_keras.tasks import colors
from mtl_keras.tasks.base import LabelGeometry, SavedPrediction, TaskSpec
from mtl_keras.tasks.depth import depth
from mtl_keras.tasks.edges import edges
from mtl_keras.tasks.human_parts import human_parts
from mtl_keras.tasks.normals import normals
from mtl_keras.tasks.saliency import saliency
from mtl_keras.tasks.semseg import semseg

TASKS = {
    "semseg": semseg,
    "depth": depth,
    "normals": normals,
    "edges": edges,
    "saliency": saliency,
    "human_parts": human_parts,
}
# Task names are exact, not aliased: they key the data, the outputs and the layer names, so one
# task has one name. These spellings only make the error suggest the canonical name.
_SUGGESTIONS = {
    "segmentation": "semseg",
    "semantic_segmentation": "semseg",
    "surface_normals": "normals",
    "boundaries": "edges",
    "parts": "human_parts",
    "human_parsing": "human_parts",
}


def available() -> list[str]:
    """Canonical task names."""
    return list(TASKS)


def register(
    name: str, factory: Callable[..., TaskSpec], *, replace: bool = False
) -> Callable[..., TaskSpec]:
    """Add a task: ``factory(**options) -> TaskSpec`` whose spec is named ``name``.

    Afterwards ``get(name, **options)``, ``from_config`` (so a saved `MultiTaskModel` reloads),
    recipes (``tasks=[name]``), the augmentation and the previews find the task by its name;
    TaskSpec objects can also be passed directly wherever tasks are accepted.

    Args:
        name: the task name; it keys the data, the outputs, the layers and the logs.
        factory: builds the TaskSpec from keyword options (which ``get_config`` records).
        replace: allow replacing a registered task (the built-in ones included).

    Returns:
        ``factory``.

    Raises:
        ValueError: ``name`` is taken (and ``replace`` is False) or not an identifier.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a task name is an identifier such as 'flow', got {name!r}")
    if name in TASKS and not replace:
        raise ValueError(f"task {name!r} is registered already; pass replace=True to replace it")
    TASKS[name] = factory
    return factory


def get(name: str, **kwargs) -> TaskSpec:
    """Build the TaskSpec of ``name`` (e.g. ``get("semseg", num_classes=21)``)."""
    if name not in TASKS:
        raise ValueError(unknown_message("task", name, available(), _SUGGESTIONS))
    spec = TASKS[name](**kwargs)
    if spec.name != name:
        raise ValueError(f"the factory registered as task {name!r} built a task {spec.name!r}")
    return dataclasses.replace(spec, options=dict(kwargs))


def from_config(config: Mapping) -> TaskSpec:
    """The TaskSpec of ``spec.get_config()``: ``get(config["name"], **config["options"])``.

    Example:
        >>> from_config(get("semseg", num_classes=5).get_config()).channels
        5
    """
    options = dict(config.get("options") or {})
    if "class_names" in options and options["class_names"] is not None:
        options["class_names"] = tuple(options["class_names"])
    return get(config["name"], **options)


def resolve(
    tasks: Iterable[str | TaskSpec], options: Mapping[str, Mapping] | None = None
) -> dict[str, TaskSpec]:
    """Turn names (with optional per-task kwargs) or TaskSpecs into an ordered ``{name: spec}``."""
    options = options or {}
    out: dict[str, TaskSpec] = {}
    for task in tasks:
        spec = task if isinstance(task, TaskSpec) else get(task, **dict(options.get(task, {})))
        if spec.name in out:
            raise ValueError(f"task {spec.name!r} is listed twice")
        out[spec.name] = spec
    if not out:
        raise ValueError(f"at least one task is needed; valid tasks: {', '.join(available())}")
    return out


__all__ = [
    "TASKS",
    "LabelGeometry",
    "SavedPrediction",
    "TaskSpec",
    "available",
    "colors",
    "depth",
    "edges",
    "from_config",
    "get",
    "human_parts",
    "normals",
    "register",
    "resolve",
    "saliency",
    "semseg",
]
