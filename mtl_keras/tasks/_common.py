"""Building blocks shared by the task factories: class maps and binary maps.

The colour maps live in the public `mtl_keras.tasks.colors` (re-exported here for older imports).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtl_keras.tasks import losses
from mtl_keras.tasks.base import SavedPrediction, TaskSpec
from mtl_keras.tasks.colors import (  # noqa: F401  (re-exported)
    colorize_classes,
    colorize_normals,
    colorize_scalar,
    colorize_unit,
    palette,
)


def _logit(p: float) -> float:
    p = float(np.clip(p, 1e-4, 1 - 1e-4))
    return float(np.log(p / (1 - p)))


def _one_hot(num_classes: int):
    def decode(stored: np.ndarray) -> np.ndarray:
        ids = np.clip(np.asarray(stored)[..., 0].astype(np.int64), 0, num_classes - 1)
        return np.eye(num_classes, dtype=np.float32)[ids]

    return decode


def _argmax_map(scores: np.ndarray) -> np.ndarray:
    return np.argmax(np.asarray(scores), axis=-1)[..., None].astype(np.float32)


#: A probability map saved as ``255 · p`` in an 8-bit PNG (the survey's edges and saliency).
UNIT_PNG = SavedPrediction(
    encode=lambda p: np.asarray(p, np.float32) * 255.0,
    interpolation="bilinear",
    quantize=True,
    decode=lambda x: np.asarray(x, np.float32) / 255.0,
)


def classification_task(
    name: str,
    num_classes: int,
    class_names: tuple[str, ...] | None,
    ignore_value: int = 255,
    score_labelled_only: bool = False,
) -> TaskSpec:
    """A per-pixel classification task: softmax cross-entropy, mIoU, class map + probabilities."""
    from mtl_keras.metrics import MeanIoU

    if num_classes < 2:
        raise ValueError(f"task {name!r} needs num_classes >= 2, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"task {name!r}: {len(class_names)} class names given for {num_classes} classes"
        )

    def baseline(labels: np.ndarray) -> np.ndarray:
        # The majority class is the best constant under mIoU: a constant class c scores
        # IoU_c = freq_c (every other IoU is 0), so mIoU = freq_c / C, largest for the majority.
        ids = labels[labels != ignore_value].astype(np.int64)
        freq = np.bincount(ids, minlength=num_classes)[:num_classes].astype(np.float64)
        return np.log(freq / max(freq.sum(), 1.0) + 1e-6).astype(np.float32)

    def serve(raw):
        probs = tf.nn.softmax(tf.cast(raw, tf.float32), axis=-1)
        return {
            f"{name}_class": tf.argmax(probs, axis=-1, output_type=tf.int32),
            f"{name}_probs": probs,
        }

    return TaskSpec(
        name=name,
        channels=num_classes,
        label_channels=1,
        label_dtype="uint8",
        loss=lambda y, p, **kw: losses.softmax_cross_entropy(y, p, ignore_value=ignore_value, **kw),
        metrics=lambda: [MeanIoU(num_classes, ignore_index=ignore_value, name=f"{name}_iou")],
        higher_is_better={"miou": True, "pixel_acc": True},
        primary_metric="miou",
        activate=lambda raw: tf.nn.softmax(tf.cast(raw, tf.float32), axis=-1),
        serve=serve,
        interpolation="nearest",
        ignore_value=ignore_value,
        baseline=baseline,
        colorize=lambda a: colorize_classes(a, num_classes, ignore_value),
        num_classes=num_classes,
        class_names=class_names,
        feature="png8",
        saved=SavedPrediction(
            encode=_argmax_map, interpolation="nearest", quantize=True, decode=_one_hot(num_classes)
        ),
        protocol_metrics=lambda protocol: [
            MeanIoU(
                num_classes,
                ignore_index=ignore_value,
                name=f"{name}_iou",
                absent=protocol.miou_absent,
            )
        ],
        score_labelled_only=score_labelled_only,
        valid_mask=lambda y: losses.valid_class_pixels(y, ignore_value),
    )


def binary_task(
    name: str,
    *,
    pos_weight: float | None,
    metrics,
    higher_is_better,
    primary: str,
    protocol_metrics=None,
    protocol_primary=None,
):
    """A per-pixel binary task predicted as one logit, activated by a sigmoid.

    The trivial baseline predicts every pixel positive (probability 1 - 1e-4, above every
    threshold): under a thresholded F-measure or IoU a constant either marks every pixel positive
    or none, and none scores 0 (no true positive), so "all positive" is the best constant under
    each of these metrics. (The positive rate, the best constant under the loss, lies below most
    thresholds and scored 0.)
    """

    def baseline(labels: np.ndarray) -> np.ndarray:
        return np.array([_logit(1.0)], np.float32)

    ignore_value = 255

    return TaskSpec(
        name=name,
        channels=1,
        label_channels=1,
        label_dtype="float32",
        loss=lambda y, p, **kw: losses.balanced_bce(
            y, p, pos_weight=pos_weight, ignore_value=ignore_value, **kw
        ),
        metrics=metrics,
        higher_is_better=higher_is_better,
        primary_metric=primary,
        activate=lambda raw: tf.sigmoid(tf.cast(raw, tf.float32)),
        serve=lambda raw: {f"{name}_prob": tf.sigmoid(tf.cast(raw, tf.float32))},
        interpolation="nearest",
        ignore_value=ignore_value,
        baseline=baseline,
        colorize=colorize_unit,
        feature="float32",
        saved=UNIT_PNG,
        protocol_metrics=protocol_metrics,
        protocol_primary=protocol_primary,
        valid_mask=lambda y: losses.valid_binary_pixels(y, ignore_value),
    )
