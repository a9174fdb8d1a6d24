"""Surface-normal angle errors pooled over the set: mean, median, RMSE, fractions within limits."""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from mtl_keras.metrics.segmentation import pixel_weights

Tensor = Any

EPS = 1e-12
WITHIN_DEGREES = (11.25, 22.5, 30.0)


@keras.saving.register_keras_serializable(package="mtl_keras")
class NormalAngleErrors(keras.metrics.Metric):
    """Angle between predicted and true normals over all valid pixels of the set.

    Per valid pixel (label not the zero vector), both vectors are L2-normalised with
    ``n / max(‖n‖, 1e-12)`` and ``angle = degrees(arccos(clip(⟨n̂_pred, n̂_gt⟩, −1, 1)))``, computed
    in float64 (in float32 the arccos of a dot product near 1 is only good to about 0.03°). A zero
    prediction therefore scores 90°. Over the pooled set of angles (Vandenhende et al., "Multi-Task
    Learning for Dense Prediction Tasks: A Survey", TPAMI 2022; the mean is the survey's normals
    metric) the metric reports ``mean``, ``rmse`` = sqrt(mean of angle²), ``median`` and
    ``within_11_25`` / ``within_22_5`` / ``within_30``, the fractions in [0, 1] of angles strictly
    below 11.25°, 22.5° and 30°.

    Mean, RMSE and the fractions are exact. The median is read from a histogram of ``bins`` equal
    bins over [0°, 180°] (0.01° wide by default): the bin where the cumulative count reaches half
    the total, linearly interpolated inside that bin. It is within one bin width of the sample's
    lower median (within half a bin for an odd count); for an even count the two middle angles are
    not averaged as ``np.median`` does, which only matters for tiny sets. With no valid pixel every
    value is 0. The state (float64) is summed across replicas under a ``tf.distribute`` strategy.

    Args:
        name: metric name.
        bins: number of histogram bins over [0°, 180°] for the median (resolution 180 / bins°).
        dtype: Keras dtype policy of the metric; the state is float64, results are float32.

    Example:
        >>> import numpy as np
        >>> m = NormalAngleErrors()
        >>> m.update_state(np.array([[[[0.0, 0.0, 1.0]]]]), np.array([[[[0.0, 1.0, 1.0]]]]))
        >>> round(float(m.result()["mean"]), 3)
        45.0
    """

    def __init__(self, name: str = "normal_errors", bins: int = 18000, dtype: Any = None):
        super().__init__(name=name, dtype=dtype)
        if int(bins) != bins or bins < 1:
            raise ValueError(f"NormalAngleErrors expects bins >= 1 (an integer), got {bins!r}.")
        self.bins = int(bins)
        self.count = self._state("count", ())
        self.angle_sum = self._state("angle_sum", ())
        self.sq_angle_sum = self._state("sq_angle_sum", ())
        self.within_counts = self._state("within_counts", (len(WITHIN_DEGREES),))
        self.histogram = self._state("histogram", (self.bins,))

    def _state(self, name: str, shape: tuple):
        return self.add_variable(
            shape=shape, initializer="zeros", dtype="float64", aggregation="sum", name=name
        )

    def update_state(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None):
        """Accumulate one batch.

        Args:
            y_true: normals ``(B, H, W, 3)``; the zero vector marks invalid pixels.
            y_pred: predicted normals ``(B, H, W, 3)``, not necessarily of unit length.
            sample_weight: optional per-image ``(B,)`` or per-pixel ``(B, H, W)`` weights.
        """
        y_true = tf.convert_to_tensor(y_true)
        weights = pixel_weights(sample_weight, y_true[..., :1])
        weights = tf.reshape(weights, [-1])
        gt = tf.reshape(tf.cast(y_true, tf.float64), [-1, 3])
        pred = tf.reshape(tf.cast(y_pred, tf.float64), [-1, 3])
        gt_norm = tf.norm(gt, axis=-1, keepdims=True)
        valid = tf.reshape(gt_norm > 0, [-1])
        gt = gt / tf.maximum(gt_norm, EPS)
        pred = pred / tf.maximum(tf.norm(pred, axis=-1, keepdims=True), EPS)
        cosine = tf.clip_by_value(tf.reduce_sum(gt * pred, axis=-1), -1.0, 1.0)
        angle = tf.acos(cosine) * (180.0 / math.pi)
        weights = tf.where(valid, weights, tf.zeros_like(weights))
        angle = tf.where(valid, angle, tf.zeros_like(angle))

        self.count.assign_add(tf.reduce_sum(weights))
        self.angle_sum.assign_add(tf.reduce_sum(weights * angle))
        self.sq_angle_sum.assign_add(tf.reduce_sum(weights * tf.square(angle)))
        below = tf.cast(angle[:, None] < tf.constant(WITHIN_DEGREES, tf.float64), tf.float64)
        self.within_counts.assign_add(tf.reduce_sum(weights[:, None] * below, axis=0))
        index = tf.cast(tf.floor(angle * (self.bins / 180.0)), tf.int32)
        index = tf.clip_by_value(index, 0, self.bins - 1)
        self.histogram.assign_add(tf.math.unsorted_segment_sum(weights, index, self.bins))

    def _median(self, n: tf.Tensor) -> tf.Tensor:
        hist = tf.convert_to_tensor(self.histogram)
        cumulative = tf.cumsum(hist)
        half = n / 2.0
        k = tf.argmax(tf.cast(cumulative >= half, tf.int32), output_type=tf.int32)
        before = cumulative[k] - hist[k]
        fraction = tf.math.divide_no_nan(half - before, hist[k])
        median = (tf.cast(k, tf.float64) + fraction) * (180.0 / self.bins)
        return tf.where(n > 0, median, tf.zeros_like(median))

    def result(self) -> dict[str, tf.Tensor]:
        n = tf.convert_to_tensor(self.count)
        within = tf.math.divide_no_nan(tf.convert_to_tensor(self.within_counts), n)
        values = {
            "mean": tf.math.divide_no_nan(tf.convert_to_tensor(self.angle_sum), n),
            "median": self._median(n),
            "rmse": tf.sqrt(tf.math.divide_no_nan(tf.convert_to_tensor(self.sq_angle_sum), n)),
            "within_11_25": within[0],
            "within_22_5": within[1],
            "within_30": within[2],
        }
        return {k: tf.cast(v, tf.float32) for k, v in values.items()}

    def get_config(self) -> dict:
        return {**super().get_config(), "bins": self.bins}
