"""Architecture builders: ``build(name, tasks, **kwargs) -> keras.Model`` with dict outputs."""

from __future__ import annotations

from collections.abc import Callable

import keras

from mtl_keras.architectures.base import (
    ImageNormalization,
    SharedRepresentation,
    Sharing,
    is_auxiliary,
    sharing_of,
    task_of,
)
from mtl_keras.architectures.hard_sharing import build_hard_sharing, build_single_task


def _single_task(tasks, **kwargs):
    tasks = list(tasks)
    if len(tasks) != 1:
        raise ValueError(f"single_task takes exactly one task, got {len(tasks)}: {tasks}")
    return build_single_task(tasks[0], **kwargs)


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "single_task": _single_task,
    "hard_sharing": build_hard_sharing,
}


def available() -> list[str]:
    return list(ARCHITECTURES)


def build(name: str, tasks, **kwargs) -> keras.Model:
    """Build architecture ``name`` for ``tasks``."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(available())}")
    return ARCHITECTURES[name](tasks, **kwargs)


__all__ = [
    "ARCHITECTURES",
    "ImageNormalization",
    "SharedRepresentation",
    "Sharing",
    "available",
    "build",
    "build_hard_sharing",
    "build_single_task",
    "is_auxiliary",
    "sharing_of",
    "task_of",
]
