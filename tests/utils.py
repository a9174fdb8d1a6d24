"""Small shared builders for tests: tiny networks and tiny synthetic batches."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from mtl_keras.architectures import build_hard_sharing
from mtl_keras.data import SyntheticScenes, synthetic_task_options
from mtl_keras.tasks import resolve

ALL_TASKS = ("semseg", "depth", "normals", "edges", "saliency", "human_parts")

#: the Recipe fields of the run-level tests: two tasks, a 32 px ResNet-10 of width 8 and conv
#: heads, one epoch of 2 steps of 4 images, no image summaries
TINY_RECIPE = {
    "tasks": ("semseg", "depth"),
    "image_size": (32, 32),
    "train_examples": 8,
    "val_examples": 4,
    "batch_size": 4,
    "epochs": 1,
    "backbone": "resnet10",
    "backbone_kwargs": {"width": 8, "output_stride": 8},
    "head": "conv",
    "head_kwargs": {"filters": 8, "num_convs": 1},
    "image_summaries": 0,
}


@functools.cache
def two_replicas() -> tf.distribute.MirroredStrategy:
    """The one MirroredStrategy over the 2 logical CPUs of the test session.

    Several MirroredStrategy objects in one process can interleave their collective ops and fail,
    so every distributed test shares this one.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def tiny_specs(tasks=ALL_TASKS):
    return resolve(tasks, synthetic_task_options())


def tiny_network(tasks=ALL_TASKS, size=32, head="conv", **kwargs):
    kwargs.setdefault("backbone", "resnet10")
    kwargs.setdefault("backbone_kwargs", {"width": 8, "output_stride": 8})
    if head == "conv":
        kwargs.setdefault("head_kwargs", {"filters": 8, "num_convs": 1})
    return build_hard_sharing(
        list(tiny_specs(tasks).values()), head=head, image_size=(size, size), **kwargs
    )


def tiny_arrays(tasks=ALL_TASKS, n=4, size=32, split="train", seed=0):
    return SyntheticScenes(image_size=(size, size), seed=seed).arrays(split, n, tasks=tasks)


def tiny_dataset(tasks=ALL_TASKS, n=4, size=32, batch=2):
    arrays = tiny_arrays(tasks, n, size)
    labels = {t: arrays[t] for t in tasks}
    return tf.data.Dataset.from_tensor_slices((arrays["image"], labels)).batch(batch)


def weights_of(model) -> list[np.ndarray]:
    return [np.array(v) for v in model.network.weights]


def micro_network(tasks=("semseg", "depth", "normals"), size=16):
    """A few-layer hard-sharing network: cheap to trace, for per-balancer trainer tests."""
    import keras

    from mtl_keras.architectures import ImageNormalization, SharedRepresentation

    specs = tiny_specs(tasks)
    image = keras.Input((size, size, 3), name="image")
    x = ImageNormalization()(image)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="enc1")(x)
    x = keras.layers.BatchNormalization(synchronized=True, name="enc_bn")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="enc2")(x)
    z = SharedRepresentation(name="shared")(x)
    outputs = {}
    for t, s in specs.items():
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name=f"{t}_conv")(z)
        outputs[t] = keras.layers.Conv2D(s.channels, 1, name=t)(h)
    return keras.Model(image, outputs, name="micro")
