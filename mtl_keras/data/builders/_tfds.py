"""The TFDS side shared by the builders: feature declarations and the manual-directory plumbing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

#: TFDS split name of each split of the on-disk layouts.
SPLIT_NAMES = {"train": "train", "val": "validation"}


def task_feature(task):
    """The TFDS feature of a task (a TaskSpec or a registered name), from its TaskSpec.

    ``spec.feature == "png8"`` (class maps) is an 8-bit PNG, ``"float32"`` a zlib-compressed
    float32 tensor, with ``spec.label_channels`` channels.
    """
    from mtl_keras import tasks

    spec = task if isinstance(task, tasks.TaskSpec) else tasks.get(task)
    if spec.feature == "png8":
        return tfds.features.Image(shape=(None, None, spec.label_channels), dtype=np.uint8)
    if spec.feature == "float32":
        return tfds.features.Tensor(
            shape=(None, None, spec.label_channels), dtype=np.float32, encoding="zlib"
        )
    raise ValueError(
        f"task {spec.name!r} declares feature {spec.feature!r}; expected 'png8' or 'float32'"
    )


def features(tasks: Sequence[str]) -> tfds.features.FeaturesDict:
    """``id`` (the example's file stem or relative path), ``image`` and one feature per task."""
    spec = {
        "id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
    }
    spec.update({task: task_feature(task) for task in tasks})
    return tfds.features.FeaturesDict(spec)


def generate(
    root: Path,
    ids: Iterable[str],
    read_example: Callable[[Path, str], dict],
    tasks: Sequence[str],
):
    """Yield ``(key, example)`` pairs of the features declared by `features`."""
    for example_id in ids:
        example = read_example(root, example_id)
        yield (
            example_id,
            {"id": example_id, "image": example["image"]} | {task: example[task] for task in tasks},
        )
