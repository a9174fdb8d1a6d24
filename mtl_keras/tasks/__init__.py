"""Task registry: ``get(name, **kwargs) -> TaskSpec`` for the six canonical dense tasks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from mtl_keras._names import unknown_message
from mtl_keras.tasks.base import TaskSpec
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


def get(name: str, **kwargs) -> TaskSpec:
    """Build the TaskSpec of ``name`` (e.g. ``get("semseg", num_classes=21)``)."""
    if name not in TASKS:
        raise ValueError(unknown_message("task", name, available(), _SUGGESTIONS))
    spec = TASKS[name](**kwargs)
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
    "TaskSpec",
    "available",
    "depth",
    "edges",
    "from_config",
    "get",
    "human_parts",
    "normals",
    "resolve",
    "saliency",
    "semseg",
]
