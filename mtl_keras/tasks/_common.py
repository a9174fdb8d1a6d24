"""Building blocks shared by the task factories: class maps, binary maps, colour maps."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtl_keras.tasks import losses
from mtl_keras.tasks.base import LabelGeometry, SavedPrediction, TaskSpec


def palette(n: int) -> np.ndarray:
    """A deterministic, well-spread RGB palette of ``n`` colours (the PASCAL VOC bit scheme)."""
    colors = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i + 1, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors[i] = (r, g, b)
    return colors


def colorize_classes(array: np.ndarray, num_classes: int, ignore_value: int = 255) -> np.ndarray:
    """Class map (H, W, 1) or scores (H, W, C) -> RGB; ignored pixels are black."""
    array = np.asarray(array)
    if array.shape[-1] > 1:
        array = np.argmax(array, axis=-1)[..., None]
    ids = array[..., 0].astype(np.int64)
    out = np.zeros(ids.shape + (3,), np.uint8)
    valid = (ids >= 0) & (ids < num_classes) & (ids != ignore_value)
    out[valid] = palette(num_classes)[ids[valid]]
    return out


def colorize_scalar(array: np.ndarray) -> np.ndarray:
    """A scalar map (H, W, 1) -> RGB (blue to yellow), normalised over valid (> 0) pixels."""
    x = np.asarray(array, np.float32)[..., 0]
    valid = x > 0
    lo, hi = (x[valid].min(), x[valid].max()) if valid.any() else (0.0, 1.0)
    t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = np.stack([t, 0.2 + 0.6 * t * (1 - t) * 4 / 2, 1.0 - t], axis=-1)
    return (np.where(valid[..., None], rgb, 0.0) * 255).astype(np.uint8)


def colorize_unit(array: np.ndarray) -> np.ndarray:
    """A probability or binary map (H, W, 1) in [0, 1] -> grey RGB."""
    x = np.clip(np.asarray(array, np.float32)[..., 0], 0.0, 1.0)
    return np.repeat((x * 255).astype(np.uint8)[..., None], 3, axis=-1)


def colorize_normals(array: np.ndarray) -> np.ndarray:
    """Normals (H, W, 3) in [-1, 1] -> RGB as (n + 1) / 2; invalid (zero) vectors stay black."""
    n = np.asarray(array, np.float32)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    unit = n / np.maximum(norm, 1e-12)
    return np.where(norm > 0, (unit + 1.0) * 127.5, 0.0).astype(np.uint8)


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
        geometry=LabelGeometry(resample="nearest", fill=float(ignore_value)),
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
        geometry=LabelGeometry(resample="nearest", fill=float(ignore_value)),
        feature="float32",
        saved=UNIT_PNG,
        protocol_metrics=protocol_metrics,
        protocol_primary=protocol_primary,
        valid_mask=lambda y: losses.valid_binary_pixels(y, ignore_value),
    )
