"""The TFDS side shared by the builders: feature declarations and the manual-directory plumbing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

#: TFDS split name of each split of the on-disk layouts.
SPLIT_NAMES = {"train": "train", "val": "validation"}


def task_feature(task: str):
    """The TFDS feature of a canonical task, in the library's label convention.

    Class maps are stored as 8-bit PNG, float maps as zlib-compressed float32 tensors.
    """
    if task in ("semseg", "human_parts"):
        return tfds.features.Image(shape=(None, None, 1), dtype=np.uint8)
    channels = 3 if task == "normals" else 1
    return tfds.features.Tensor(shape=(None, None, channels), dtype=np.float32, encoding="zlib")


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
