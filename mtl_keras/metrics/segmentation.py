"""Mean intersection-over-union from a confusion matrix pooled over the whole set.

Also holds `pixel_weights`, the ``sample_weight`` handling shared by the per-pixel metrics.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

Tensor = Any


def pixel_weights(sample_weight: Tensor | None, like: Tensor) -> tf.Tensor:
    """Broadcast an optional ``sample_weight`` to the shape of a label map, as float64.

    Args:
        sample_weight: None (every pixel weighs 1), per-image weights ``(B,)`` or any tensor whose
            leading axes match the label's, e.g. ``(B, H, W)`` or ``(B, H, W, 1)``.
        like: the label map, e.g. ``(B, H, W, 1)``.

    Returns:
        float64 weights with the shape of ``like``.
    """
    like = tf.convert_to_tensor(like)
    if sample_weight is None:
        return tf.ones(tf.shape(like), tf.float64)
    weights = tf.cast(sample_weight, tf.float64)
    while weights.shape.rank < like.shape.rank:
        weights = weights[..., None]
    return tf.broadcast_to(weights, tf.shape(like))


@keras.saving.register_keras_serializable(package="mtl_keras")
class MeanIoU(keras.metrics.Metric):
    """Mean IoU and pixel accuracy over a confusion matrix accumulated over the set.

    IoU_c = TP_c / (TP_c + FP_c + FN_c), with TP, FP and FN counted over every valid pixel of the
    set (not averaged per image), as in the evaluation code of Vandenhende et al., "Multi-Task
    Learning for Dense Prediction Tasks: A Survey", TPAMI 2022. ``miou`` is the mean of IoU_c over
    the classes that occur in the labels or the predictions (TP + FP + FN > 0); a class absent from
    both has no defined IoU and is left out of the mean (``absent="skip"``, the ``nanmean``
    convention of most code). The survey's ``eval_semseg`` divides by ``max(TP + FP + FN, 1e-8)``
    and averages over *all* classes, so an absent class counts as IoU 0 (``absent="zero"``, its
    evaluation protocol). Once every class has appeared, as on a full test set, both agree.
    ``pixel_acc`` is Σ_c TP_c / N_valid. Both are fractions in [0, 1]; with no valid pixel both
    are 0.

    Pixels whose label equals ``ignore_index`` or lies outside ``[0, num_classes)`` are skipped.
    State: a float64 ``(num_classes, num_classes)`` confusion matrix (rows: label, columns:
    prediction), summed across replicas under a ``tf.distribute`` strategy.

    Args:
        num_classes: number of classes C.
        ignore_index: label value to skip (255 by the library's convention).
        absent: ``"skip"`` leaves classes absent from labels and predictions out of the mean;
            ``"zero"`` counts them as IoU 0 (the survey's ``eval_semseg``).
        name: metric name.
        dtype: Keras dtype policy of the metric; the state is float64, results are float32.

    Example:
        >>> import numpy as np
        >>> m = MeanIoU(num_classes=2)
        >>> labels = np.array([[[[0], [1], [255]]]], np.uint8)
        >>> scores = np.array([[[[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]]]], np.float32)
        >>> m.update_state(labels, scores)
        >>> {k: round(float(v), 3) for k, v in m.result().items()}
        {'miou': 0.25, 'pixel_acc': 0.5}
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        name: str = "miou",
        dtype: Any = None,
        absent: str = "skip",
    ):
        super().__init__(name=name, dtype=dtype)
        if absent not in ("skip", "zero"):
            raise ValueError(f"MeanIoU absent must be 'skip' or 'zero', got {absent!r}.")
        self.absent = absent
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(
                f"MeanIoU expects num_classes to be a positive integer, got {num_classes!r}."
            )
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="float64",
            aggregation="sum",
            name="confusion",
        )

    def update_state(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None):
        """Accumulate one batch.

        Args:
            y_true: integer class map ``(B, H, W, 1)``; ``ignore_index`` marks skipped pixels.
            y_pred: class probabilities or logits ``(B, H, W, C)``; the class is the argmax.
            sample_weight: optional per-image ``(B,)`` or per-pixel weights (see `pixel_weights`).
        """
        y_pred = tf.convert_to_tensor(y_pred)
        if y_pred.shape.rank is not None and y_pred.shape[-1] not in (None, self.num_classes):
            raise ValueError(
                f"MeanIoU(num_classes={self.num_classes}) expects scores with "
                f"{self.num_classes} channels on the last axis, got shape {y_pred.shape}. Pass "
                "per-class probabilities or logits, not a class map."
            )
        y_true = tf.convert_to_tensor(y_true)
        weights = tf.reshape(pixel_weights(sample_weight, y_true), [-1])
        labels = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        preds = tf.reshape(tf.argmax(y_pred, axis=-1), [-1])
        c = self.num_classes
        valid = (labels != self.ignore_index) & (labels >= 0) & (labels < c)
        cells = tf.where(valid, labels * c + preds, 0)
        counts = tf.math.unsorted_segment_sum(
            tf.where(valid, weights, tf.zeros_like(weights)), cells, c * c
        )
        self.confusion.assign_add(tf.reshape(counts, (c, c)))

    def result(self) -> dict[str, tf.Tensor]:
        cm = tf.convert_to_tensor(self.confusion)
        tp = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, axis=0) + tf.reduce_sum(cm, axis=1) - tp
        present = union > 0
        if self.absent == "zero":
            present = tf.ones_like(present)
        iou = tf.math.divide_no_nan(tp, union)
        n_present = tf.reduce_sum(tf.cast(present, tf.float64))
        miou = tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, iou, 0.0)), n_present)
        acc = tf.math.divide_no_nan(tf.reduce_sum(tp), tf.reduce_sum(cm))
        return {"miou": tf.cast(miou, tf.float32), "pixel_acc": tf.cast(acc, tf.float32)}

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "absent": self.absent,
        }
