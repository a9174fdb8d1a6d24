"""Saliency maxF and max mean IoU over thresholds, from per-image precision, recall and IoU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

Tensor = Any

EPS = 1e-12
IGNORE_VALUE = 255


@keras.saving.register_keras_serializable(package="mtl_keras")
class SaliencyMaxF(keras.metrics.Metric):
    """Maximum F-measure and maximum mean IoU over binarisation thresholds.

    The protocol of the survey's code (Vandenhende et al., "Multi-Task Learning for Dense Prediction
    Tasks: A Survey", TPAMI 2022, after Maninis et al., "Attentive Single-Tasking of Multiple
    Tasks", CVPR 2019). For each image and each threshold t (by default ``linspace(0.2, 0.9, 15)``),
    the prediction is binarised as ``pred >= t`` (``strict=True``: ``pred > t``, as the survey's
    ``eval_sal``) and the label as ``label > 0.5``; over the image's valid pixels (label ≠ 255):

        P = TP / (TP + FP + 1e-12),  R = TP / (TP + FN + 1e-12),
        IoU = TP / (TP + FP + FN), or 1 when the image has neither true nor predicted positives.

    So an image without predicted positives has P = 0, one without positives has R = 0 (the
    survey's epsilon convention), and an empty prediction of an empty label is a perfect IoU.
    P, R and IoU are averaged over images (P̄, R̄ per threshold), then

        max_f = max_t (1 + β²) P̄ R̄ / (β² P̄ + R̄),  miou = max_t mean IoU,

    with F = 0 where P̄ + R̄ = 0. The survey's code uses β² = 1 (and selects models by ``miou``); the
    saliency literature often uses β² = 0.3. Images with no valid pixel are skipped. Both results
    are in [0, 1], 0 before any image. The state (float64 sums over images of P, R and IoU per
    threshold, and the image count) is summed across replicas under a ``tf.distribute`` strategy.

    Args:
        thresholds: number of thresholds evenly spaced over [0.2, 0.9], or explicit thresholds.
        beta2: β² of the F-measure.
        name: metric name.
        strict: binarise with ``pred > t`` (the survey's ``eval_sal``) instead of ``pred >= t``.
        dtype: Keras dtype policy of the metric; the state is float64, results are float32.

    Example:
        >>> import numpy as np
        >>> m = SaliencyMaxF(thresholds=[0.5])
        >>> m.update_state(np.array([[[[1.0], [0.0]]]]), np.array([[[[0.7], [0.6]]]]))
        >>> {k: round(float(v), 3) for k, v in m.result().items()}
        {'max_f': 0.667, 'miou': 0.5}
    """

    def __init__(
        self,
        thresholds: int | Sequence[float] = 15,
        beta2: float = 1.0,
        name: str = "saliency",
        dtype: Any = None,
        strict: bool = False,
    ):
        super().__init__(name=name, dtype=dtype)
        self.strict = bool(strict)
        if isinstance(thresholds, (int, np.integer)):
            if thresholds < 1:
                raise ValueError(f"SaliencyMaxF expects thresholds >= 1, got {thresholds}.")
            values = np.linspace(0.2, 0.9, int(thresholds))
            self.thresholds = int(thresholds)
        else:
            values = np.asarray(thresholds, np.float64).reshape(-1)
            if values.size == 0:
                raise ValueError("SaliencyMaxF expects at least one threshold, got none.")
            self.thresholds = [float(t) for t in values]
        if beta2 <= 0:
            raise ValueError(f"SaliencyMaxF expects beta2 > 0, got {beta2}.")
        self.beta2 = float(beta2)
        self._values = np.sort(values).astype(np.float32)
        t = len(self._values)
        self.precision_sum = self._state("precision_sum", (t,))
        self.recall_sum = self._state("recall_sum", (t,))
        self.iou_sum = self._state("iou_sum", (t,))
        self.image_count = self._state("image_count", ())

    def _state(self, name: str, shape: tuple):
        return self.add_variable(
            shape=shape, initializer="zeros", dtype="float64", aggregation="sum", name=name
        )

    def update_state(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None):
        """Accumulate one batch of images.

        Args:
            y_true: saliency labels ``(B, H, W, 1)`` in {0, 1}; 255 marks ignored pixels.
            y_pred: saliency probabilities ``(B, H, W, 1)`` in [0, 1].
            sample_weight: optional per-image weights ``(B,)`` (or ``(B, 1, 1, 1)``), weighting each
                image in the averages over images; 0 drops an image.
        """
        y_true = tf.convert_to_tensor(y_true)
        batch = tf.shape(y_true)[0]
        gt = tf.reshape(tf.cast(y_true, tf.float32), [batch, -1])
        pred = tf.reshape(tf.cast(y_pred, tf.float32), [batch, -1])
        valid = gt != IGNORE_VALUE
        positive = tf.cast((gt > 0.5) & valid, tf.float64)
        negative = tf.cast((gt <= 0.5) & valid, tf.float64)
        # Bucket b = number of thresholds <= pred (< pred when strict), so pred >= threshold[j]
        # (pred > threshold[j]) exactly when b > j.
        t = len(self._values)
        bucket = tf.searchsorted(
            tf.constant(self._values)[None],
            tf.reshape(pred, [1, -1]),
            side="left" if self.strict else "right",
        )
        image = tf.repeat(tf.range(batch), tf.shape(pred)[1])
        segment = image * (t + 1) + tf.reshape(bucket, [-1])

        def predicted_at_or_above(mask):
            counts = tf.math.unsorted_segment_sum(tf.reshape(mask, [-1]), segment, batch * (t + 1))
            counts = tf.reshape(counts, [batch, t + 1])
            return tf.cumsum(counts, axis=1, reverse=True)[:, 1:]

        tp = predicted_at_or_above(positive)
        fp = predicted_at_or_above(negative)
        fn = tf.reduce_sum(positive, axis=1, keepdims=True) - tp
        precision = tp / (tp + fp + EPS)
        recall = tp / (tp + fn + EPS)
        union = tp + fp + fn
        iou = tf.where(union > 0, tf.math.divide_no_nan(tp, union), tf.ones_like(union))

        has_valid = tf.reduce_any(valid, axis=1)
        weights = tf.ones([batch], tf.float64)
        if sample_weight is not None:
            weights = tf.broadcast_to(tf.reshape(tf.cast(sample_weight, tf.float64), [-1]), [batch])
        weights = tf.where(has_valid, weights, tf.zeros_like(weights))
        self.precision_sum.assign_add(tf.linalg.matvec(precision, weights, transpose_a=True))
        self.recall_sum.assign_add(tf.linalg.matvec(recall, weights, transpose_a=True))
        self.iou_sum.assign_add(tf.linalg.matvec(iou, weights, transpose_a=True))
        self.image_count.assign_add(tf.reduce_sum(weights))

    def result(self) -> dict[str, tf.Tensor]:
        n = tf.convert_to_tensor(self.image_count)
        precision = tf.math.divide_no_nan(tf.convert_to_tensor(self.precision_sum), n)
        recall = tf.math.divide_no_nan(tf.convert_to_tensor(self.recall_sum), n)
        iou = tf.math.divide_no_nan(tf.convert_to_tensor(self.iou_sum), n)
        f = tf.math.divide_no_nan(
            (1.0 + self.beta2) * precision * recall, self.beta2 * precision + recall
        )
        return {
            "max_f": tf.cast(tf.reduce_max(f), tf.float32),
            "miou": tf.cast(tf.reduce_max(iou), tf.float32),
        }

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "thresholds": self.thresholds,
            "beta2": self.beta2,
            "strict": self.strict,
        }
