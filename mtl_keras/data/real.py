"""Loaders of the published datasets: TFDS builders -> augmented, resized, batched ``tf.data``.

Each ``load_<dataset>(tasks, ...)`` prepares the dataset's TFDS builder once (from the extracted
archive in ``manual_dir``; nothing downloads) and returns a `DataBundle` like the synthetic loader:
``(image uint8 [B, H, W, 3], {task: label [B, H, W, C]})`` batches at ``image_size``, the task
options (class counts and names) and a few training labels for trivial baselines, read when first
used. The training split is also a `ShardableSplit` (``DataBundle.train_split``): workers of a
multi-worker run decode only their share of each global batch.

=====================  ===============  =====================================  =================
registry name          TFDS builder     tasks                                  default size
=====================  ===============  =====================================  =================
``nyud``               ``nyud_mt``      semseg (40), depth, normals, edges     480 x 640
``pascal_context``     ``pascal_mt``    semseg (21), human_parts (7), normals, 512 x 512
                                        edges, saliency
``nyuv2_3task``        ``nyuv2_3task``  semseg (13), depth, normals            288 x 384
``cityscapes``         ``cityscapes_mt``semseg (7 or 19), depth                128 x 256
=====================  ===============  =====================================  =================

Training examples are shuffled and augmented as the survey's code does (`mtl_keras.data.augment`
presets: NYUD flip + scale {1, 1.2, 1.5}; PASCAL flip + scale [0.75, 1.25] + rotation ±20°; the
MTAN arrays flip + scale {1, 1.2, 1.5}), then resampled to ``image_size`` in the same step;
validation examples are only resized (the survey's ``FixedResize``). Shuffling works on the
still-encoded records, so a buffer of 1,024 examples costs about their compressed size.

Directories: ``data_dir`` is where TFDS writes the prepared records (default
``$MTL_KERAS_DATA_DIR``, else TFDS's default ``~/tensorflow_datasets``); ``manual_dir`` holds the
extracted archive folder (default ``$MTL_KERAS_MANUAL_DIR``, else ``<data_dir>/downloads/manual``).

Example:
    >>> bundle = load_nyud(("semseg", "depth"), manual_dir="/data", batch_size=8)  # doctest: +SKIP
    >>> bundle.task_options["semseg"]["num_classes"]  # doctest: +SKIP
    40
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mtl_keras.data import augment as augmentation
from mtl_keras.data import builders
from mtl_keras.data.builders import cityscapes_mt, nyud_mt, nyuv2_3task, pascal_mt
from mtl_keras.data.sharding import LazyLabels, ShardableSplit


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Facts about one published dataset that the loaders and the evaluation need.

    Attributes:
        name: registry name (a key of `REAL_DATASETS`).
        builder: TFDS builder name, with the config for Cityscapes (``"cityscapes_mt/mtan7"``).
        module: the reader module of the builder (``find_root``, ``list_ids``, ``read_example``).
        tasks: the tasks the dataset labels.
        task_options: ``{task: {"num_classes", "class_names"}}`` for the TaskSpecs.
        image_size: the survey's (or MTAN's) training and test resolution.
        augment: the training augmentation preset.
        edge_max_dist: the edge-matching tolerance (fraction of the image diagonal) that the
            literature uses on this dataset, or None without edge labels.
        root_kwargs: extra arguments of the module's ``find_root``/``list_ids``/``read_example``.
    """

    name: str
    builder: str
    module: ModuleType
    tasks: tuple[str, ...]
    task_options: Mapping[str, Mapping]
    image_size: tuple[int, int]
    augment: augmentation.AugmentConfig
    edge_max_dist: float | None = None
    root_kwargs: Mapping = dataclasses.field(default_factory=dict)


def _classes(names: Sequence[str]) -> dict:
    return {"num_classes": len(names), "class_names": tuple(names)}


def dataset_spec(name: str, *, layout: str = "mtan7") -> DatasetSpec:
    """The `DatasetSpec` of registry name ``name`` (``layout`` only matters for Cityscapes)."""
    if name == "nyud":
        return DatasetSpec(
            "nyud", nyud_mt.NAME, nyud_mt, nyud_mt.TASKS,
            {"semseg": _classes(nyud_mt.SEMSEG_CLASSES)}, nyud_mt.IMAGE_SIZE,
            augmentation.NYUD_AUGMENT, edge_max_dist=0.011,
        )  # fmt: skip
    if name == "pascal_context":
        return DatasetSpec(
            "pascal_context", pascal_mt.NAME, pascal_mt, pascal_mt.TASKS,
            {"semseg": _classes(pascal_mt.SEMSEG_CLASSES),
             "human_parts": _classes(pascal_mt.PART_CLASSES)},
            pascal_mt.IMAGE_SIZE, augmentation.PASCAL_AUGMENT, edge_max_dist=0.0075,
        )  # fmt: skip
    if name == "nyuv2_3task":
        return DatasetSpec(
            "nyuv2_3task", nyuv2_3task.NAME, nyuv2_3task, nyuv2_3task.TASKS,
            {"semseg": _classes(nyuv2_3task.SEMSEG_CLASSES)}, nyuv2_3task.IMAGE_SIZE,
            augmentation.MTAN_AUGMENT,
        )  # fmt: skip
    if name == "cityscapes":
        if layout not in cityscapes_mt.LAYOUT_OPTIONS:
            raise ValueError(
                f"unknown Cityscapes layout {layout!r}; valid layouts: "
                f"{', '.join(cityscapes_mt.LAYOUT_OPTIONS)}"
            )
        classes = cityscapes_mt.LAYOUT_OPTIONS[layout].class_names
        return DatasetSpec(
            "cityscapes", f"{cityscapes_mt.NAME}/{layout}", cityscapes_mt, cityscapes_mt.TASKS,
            {"semseg": _classes(classes)}, cityscapes_mt.IMAGE_SIZE, augmentation.MTAN_AUGMENT,
            root_kwargs={"layout": layout},
        )  # fmt: skip
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(REAL_DATASETS)}")


def default_data_dir() -> str | None:
    """``$MTL_KERAS_DATA_DIR`` or None (TFDS's own default, ``~/tensorflow_datasets``)."""
    return os.environ.get("MTL_KERAS_DATA_DIR") or None


def _manual_dir(manual_dir, data_dir) -> Path:
    if manual_dir:
        return Path(manual_dir).expanduser()
    if os.environ.get("MTL_KERAS_MANUAL_DIR"):
        return Path(os.environ["MTL_KERAS_MANUAL_DIR"]).expanduser()
    base = Path(data_dir).expanduser() if data_dir else Path("~/tensorflow_datasets").expanduser()
    return base / "downloads" / "manual"


def prepare(
    spec: DatasetSpec, *, data_dir: str | None = None, manual_dir: str | None = None
) -> tfds.core.DatasetBuilder:
    """The TFDS builder of ``spec``, prepared from ``manual_dir`` if not prepared yet.

    Raises:
        DatasetFormatError: the archive folder is missing or incomplete (checked before TFDS
            starts, so the message names the expected layout).
    """
    data_dir = data_dir or default_data_dir()
    builder = tfds.builder(spec.builder, data_dir=data_dir)
    if not builder.is_prepared():
        manual = _manual_dir(manual_dir, data_dir)
        spec.module.find_root(manual, **spec.root_kwargs)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual))
        )
    return builder


def _check_tasks(spec: DatasetSpec, tasks: Sequence[str]) -> tuple[str, ...]:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in spec.tasks]
    if unknown or not tasks:
        raise ValueError(
            f"dataset {spec.name!r} has no label for task(s) {unknown or '(none given)'}; its "
            f"tasks are {', '.join(spec.tasks)}"
        )
    return tasks


def _encoded(builder, split: str, tasks, *, shuffle_files: bool, seed: int) -> tf.data.Dataset:
    """Records of ``split`` with ``image`` and ``tasks`` still encoded (cheap to shuffle)."""
    keys = ("image", *tasks)
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        decoders={k: tfds.decode.SkipDecoding() for k in keys},
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    return ds.map(lambda ex: {k: ex[k] for k in keys})


def _decoder(builder) -> Callable[[dict], dict]:
    features = builder.info.features

    def decode(encoded: dict) -> dict:
        return {k: features[k].decode_example(v) for k, v in encoded.items()}

    return decode


def _pairs(tasks):
    def split(example):
        return example["image"], {t: example[t] for t in tasks}

    return split


def _keys_and_decode(
    builder, split, tasks, *, image_size, augment, num_examples, shuffle, shuffle_buffer, seed,
    shuffle_seed,
) -> tuple[tf.data.Dataset, Callable]:  # fmt: skip
    """The records of ``split`` in reading order (with their augmentation seeds) and the function
    that decodes, augments and resizes one of them into ``(image, {task: label})``."""
    size = tuple(int(v) for v in image_size)
    ds = _encoded(builder, split, tasks, shuffle_files=shuffle, seed=shuffle_seed)
    if num_examples is not None:
        ds = ds.take(num_examples)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    decode, pairs = _decoder(builder), _pairs(tuple(tasks))
    if augment is None:
        return ds, lambda ex: pairs(augmentation.resize(decode(ex), size))
    # the k-th record of a pass gets the k-th seed pair, whichever worker decodes it
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    keys = tf.data.Dataset.zip(ds, seeds)
    return keys, lambda ex, s: pairs(augmentation.augment(decode(ex), s, augment, size))


def make_pipeline(
    builder: tfds.core.DatasetBuilder,
    split: str,
    tasks: Sequence[str],
    *,
    image_size: Sequence[int],
    batch_size: int,
    augment: augmentation.AugmentConfig | None = None,
    num_examples: int | None = None,
    shuffle: bool = False,
    shuffle_buffer: int = 1024,
    seed: int = 0,
    shuffle_seed: int = 0,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batched ``(image, {task: label})`` at ``image_size`` from a prepared builder's ``split``.

    Args:
        builder: a prepared TFDS builder of this package.
        split: ``"train"`` or ``"validation"``.
        tasks: the labels to keep.
        image_size: ``(height, width)`` of the batches.
        batch_size: examples per batch.
        augment: an augmentation config, or None for a plain resize.
        num_examples: keep only the first ``num_examples`` records (None: all).
        shuffle: shuffle the records (each epoch anew, reproducibly from ``shuffle_seed``).
        shuffle_buffer: records held by the shuffle buffer.
        seed: seed of the per-example augmentation draws.
        shuffle_seed: seed of the file and record shuffling.
        drop_remainder: drop a last, smaller batch.
    """
    keys, decode = _keys_and_decode(
        builder, split, tasks, image_size=image_size, augment=augment, num_examples=num_examples,
        shuffle=shuffle, shuffle_buffer=shuffle_buffer, seed=seed, shuffle_seed=shuffle_seed,
    )  # fmt: skip
    ds = keys.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def make_train_split(
    builder: tfds.core.DatasetBuilder,
    tasks: Sequence[str],
    *,
    image_size: Sequence[int],
    batch_size: int,
    augment: augmentation.AugmentConfig | None = None,
    num_examples: int | None = None,
    shuffle_buffer: int = 1024,
    seed: int = 0,
    shuffle_seed: int = 0,
) -> ShardableSplit:
    """The training split as a :class:`~mtl_keras.data.sharding.ShardableSplit`: its
    ``pipeline()`` is ``make_pipeline(builder, "train", ..., shuffle=True, drop_remainder=True)``,
    and a worker's share reads the still-encoded records of every global batch (the shuffle
    order is global) but decodes and augments only its own (a record-level shard)."""
    keys, decode = _keys_and_decode(
        builder, "train", tasks, image_size=image_size, augment=augment,
        num_examples=num_examples, shuffle=True, shuffle_buffer=shuffle_buffer, seed=seed,
        shuffle_seed=shuffle_seed,
    )  # fmt: skip
    return ShardableSplit(keys, decode, batch_size)


def load_examples(
    name: str,
    split: str = "val",
    *,
    tasks: Sequence[str] | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    layout: str = "mtan7",
) -> tf.data.Dataset:
    """Unbatched examples at their original resolution (``id``, ``image`` and labels).

    The input of the survey-style evaluation (`mtl_keras.evaluation.protocol`).

    Args:
        name: registry name, e.g. ``"nyud"``.
        split: ``"train"`` or ``"val"``.
        tasks: labels to keep (default all of the dataset's).
        data_dir, manual_dir: see the module docstring.
        layout: Cityscapes layout (``mtan7``, ``mtan19`` or ``official``).
    """
    spec = dataset_spec(name, layout=layout)
    tasks = spec.tasks if tasks is None else _check_tasks(spec, tasks)
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r}; valid splits: train, val")
    builder = prepare(spec, data_dir=data_dir, manual_dir=manual_dir)
    ds = builder.as_dataset(split=builders._tfds.SPLIT_NAMES[split])
    return ds.map(lambda ex: {k: ex[k] for k in ("id", "image", *tasks)})


def load_real(
    name: str,
    tasks: Sequence[str],
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    image_size: Sequence[int] | None = None,
    batch_size: int = 8,
    augment: bool | augmentation.AugmentConfig = True,
    train_examples: int | None = None,
    val_examples: int | None = None,
    seed: int = 0,
    shuffle_seed: int = 0,
    shuffle_buffer: int = 1024,
    baseline_examples: int = 16,
    layout: str = "mtan7",
):
    """Load a published dataset as a `DataBundle` (see the module docstring).

    Args:
        name: registry name (``nyud``, ``pascal_context``, ``nyuv2_3task``, ``cityscapes``).
        tasks: the tasks to load, a subset of the dataset's.
        data_dir: where TFDS keeps the prepared records.
        manual_dir: the folder holding the extracted archive (used on first use only).
        image_size: ``(height, width)`` of the batches (default: the dataset's survey size).
        batch_size: examples per batch; training batches are all full (``drop_remainder``).
        augment: True for the dataset's preset, False for none, or an `AugmentConfig`.
        train_examples: use only the first N training records (None: all).
        val_examples: use only the first N validation records (None: all).
        seed: seed of the augmentation draws.
        shuffle_seed: seed of the shuffling.
        shuffle_buffer: shuffle buffer size (records).
        baseline_examples: how many (unaugmented) training examples go to ``train_labels``.
        layout: Cityscapes layout (``mtan7``, ``mtan19`` or ``official``).

    Returns:
        A `DataBundle` with ``train``, ``val``, ``task_options`` and ``train_labels``.

    Raises:
        ValueError: unknown dataset, layout or task.
        DatasetFormatError: the archive folder is missing, incomplete or corrupt.
    """
    from mtl_keras.data import DataBundle

    spec = dataset_spec(name, layout=layout)
    tasks = _check_tasks(spec, tasks)
    size = tuple(image_size) if image_size is not None else spec.image_size
    if augment is True:
        augment = spec.augment
    elif augment is False:
        augment = None
    builder = prepare(spec, data_dir=data_dir, manual_dir=manual_dir)
    common = {"image_size": size, "batch_size": batch_size}
    train = make_train_split(
        builder, tasks, augment=augment, num_examples=train_examples,
        shuffle_buffer=shuffle_buffer, seed=seed, shuffle_seed=shuffle_seed, **common,
    )  # fmt: skip
    val = make_pipeline(builder, "validation", tasks, num_examples=val_examples, **common)
    sample = make_pipeline(
        builder, "train", tasks, image_size=size, batch_size=max(1, baseline_examples),
        num_examples=max(1, baseline_examples),
    )  # fmt: skip

    def labels():
        _, batch = next(iter(sample))
        return {t: np.asarray(v) for t, v in batch.items()}

    options = {t: dict(o) for t, o in spec.task_options.items() if t in tasks}
    return DataBundle(train.pipeline(), val, options, LazyLabels(labels), train)


def load_nyud(tasks: Sequence[str] = ("semseg", "depth"), **kwargs):
    """NYUD-v2 (``NYUD_MT``): semseg (40 classes), depth, normals, edges; see `load_real`."""
    return load_real("nyud", tasks, **kwargs)


def load_pascal_context(
    tasks: Sequence[str] = ("semseg", "human_parts", "saliency", "normals", "edges"), **kwargs
):
    """PASCAL-Context (``PASCAL_MT``): semseg (21), human_parts (7), normals, edges, saliency."""
    return load_real("pascal_context", tasks, **kwargs)


def load_nyuv2_3task(tasks: Sequence[str] = ("semseg", "depth", "normals"), **kwargs):
    """NYUv2 in the MTAN/LibMTL arrays: semseg (13 classes), depth, normals; see `load_real`."""
    return load_real("nyuv2_3task", tasks, **kwargs)


def load_cityscapes(tasks: Sequence[str] = ("semseg", "depth"), **kwargs):
    """Cityscapes: semseg (7 or 19 classes) and depth, ``layout`` mtan7/mtan19/official."""
    return load_real("cityscapes", tasks, **kwargs)


#: Registry entries for ``mtl_keras.data.DATASETS``: ``name -> load(tasks, **kwargs)``.
REAL_DATASETS: dict[str, Callable] = {
    "nyud": load_nyud,
    "pascal_context": load_pascal_context,
    "nyuv2_3task": load_nyuv2_3task,
    "cityscapes": load_cityscapes,
}


def register(datasets: dict) -> dict:
    """Add `REAL_DATASETS` to a registry such as ``mtl_keras.data.DATASETS``; returns it."""
    datasets.update(REAL_DATASETS)
    return datasets


def task_options(name: str, *, layout: str = "mtan7") -> dict:
    """``{task: {"num_classes", "class_names"}}`` of a dataset (e.g. for recipes)."""
    return {t: dict(o) for t, o in dataset_spec(name, layout=layout).task_options.items()}


__all__ = [
    "REAL_DATASETS",
    "DatasetSpec",
    "builders",
    "dataset_spec",
    "load_cityscapes",
    "load_examples",
    "load_nyud",
    "load_nyuv2_3task",
    "load_pascal_context",
    "load_real",
    "make_pipeline",
    "make_train_split",
    "prepare",
    "register",
    "task_options",
]
