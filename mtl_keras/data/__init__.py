"""Datasets: the embedded synthetic scenes (default) and loaders of the published datasets.

``load(name, ...)`` returns a :class:`DataBundle` with ``tf.data`` pipelines yielding
``(image uint8 [B, H, W, 3], {task: label [B, H, W, C]})`` and the per-task options (class counts
and names) the TaskSpecs need. The training split also comes as a
:class:`~mtl_keras.data.sharding.ShardableSplit`, which several workers decode in shares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import tensorflow as tf

from mtl_keras._names import canonical
from mtl_keras.data.sharding import LazyLabels, SceneRenderer, ShardableSplit
from mtl_keras.data.synthetic import PART_CLASSES, SEMSEG_CLASSES, TASK_NAMES, SyntheticScenes


@dataclasses.dataclass
class DataBundle:
    """Train and validation pipelines plus what the tasks need to know about the data.

    ``train`` is ``train_split.pipeline()`` when the loader gives a ``train_split``: the same
    global batches, which ``MultiWorkerMirroredStrategy`` workers then decode in shares
    (:meth:`~mtl_keras.data.sharding.ShardableSplit.worker_stream`).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    task_options: dict
    train_labels: Mapping  # a sample of training labels {task: array}, for trivial baselines
    train_split: ShardableSplit | None = None


def synthetic_task_options() -> dict:
    return {
        "semseg": {"num_classes": len(SEMSEG_CLASSES), "class_names": tuple(SEMSEG_CLASSES)},
        "human_parts": {"num_classes": len(PART_CLASSES), "class_names": tuple(PART_CLASSES)},
    }


def load_synthetic(
    tasks,
    *,
    image_size=(64, 64),
    train_examples=512,
    val_examples=128,
    batch_size=8,
    seed=0,
    shuffle_seed=0,
) -> DataBundle:
    """Synthetic scenes: deterministic by ``seed``; shuffling deterministic by ``shuffle_seed``.

    Training examples are rendered when the pipeline first reaches them (each once per process),
    so a worker that trains on a share renders only that share; the trivial baseline's sample
    (the first 256 examples at most) is rendered when first read.
    """
    scenes = SyntheticScenes(image_size=tuple(image_size), seed=seed)
    tasks = tuple(tasks)
    renderer = SceneRenderer(scenes, "train", tasks)
    split = renderer.split_of(batch_size=batch_size, num_examples=train_examples, seed=shuffle_seed)
    val = scenes.dataset(
        "val", tasks=tasks, batch_size=batch_size, num_examples=val_examples, drop_remainder=False
    )
    sample = LazyLabels(lambda: renderer.labels(min(train_examples, 256)))
    options = {t: o for t, o in synthetic_task_options().items() if t in tasks}
    return DataBundle(split.pipeline(), val, options, sample, split)


DATASETS = {"synthetic": load_synthetic}
ALIASES = {"nyud_v2": "nyud", "nyu_depth_v2": "nyud", "pascal": "pascal_context"}


def _register_real_datasets() -> None:
    from mtl_keras.data.real import REAL_DATASETS

    DATASETS.update(REAL_DATASETS)


_register_real_datasets()


def load(name: str, tasks, **kwargs) -> DataBundle:
    """Load dataset ``name`` for ``tasks``."""
    return DATASETS[canonical("dataset", name, DATASETS, ALIASES)](tasks, **kwargs)


__all__ = [
    "ALIASES",
    "DATASETS",
    "PART_CLASSES",
    "SEMSEG_CLASSES",
    "TASK_NAMES",
    "DataBundle",
    "LazyLabels",
    "ShardableSplit",
    "SyntheticScenes",
    "load",
    "load_synthetic",
    "synthetic_task_options",
]
