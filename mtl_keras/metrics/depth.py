"""Depth errors pooled over every valid pixel of the set: RMSE, abs-rel error and log-RMSE."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mtl_keras.metrics.segmentation import pixel_weights

Tensor = Any

MIN_DEPTH = 1e-9


@keras.saving.register_keras_serializable(package="mtl_keras")
class DepthErrors(keras.metrics.Metric):
    """RMSE, abs-rel and log-RMSE over all valid pixels of the set (pooled, not per image).

    With V the valid pixels of the whole set (label > 0 and finite), g the label and p the
    prediction clamped to ``p = max(p, 1e-9)`` (as the survey's code does before every error, so
    the logarithm is defined):

        rmse = sqrt(Σ_V (g − p)² / |V|),  abs_rel = Σ_V |g − p| / g / |V|,
        log_rmse = sqrt(Σ_V (log g − log p)² / |V|).

    This is the "pixel-wise" RMSE of Vandenhende et al., "Multi-Task Learning for Dense Prediction
    Tasks: A Survey", TPAMI 2022 (the NYUD-v2 depth metric, in metres). With no valid pixel every
    error is 0. The sums are float64, summed across replicas under a ``tf.distribute`` strategy.

    Args:
        name: metric name.
        dtype: Keras dtype policy of the metric; the state is float64, results are float32.

    Example:
        >>> import numpy as np
        >>> m = DepthErrors()
        >>> m.update_state(np.array([[[[2.0], [0.0]]]]), np.array([[[[1.0], [5.0]]]]))
        >>> round(float(m.result()["rmse"]), 3), round(float(m.result()["abs_rel"]), 3)
        (1.0, 0.5)
    """

    def __init__(self, name: str = "depth_errors", dtype: Any = None):
        super().__init__(name=name, dtype=dtype)
        self.count = self._sum("count")
        self.sq_error = self._sum("sq_error")
        self.abs_rel_error = self._sum("abs_rel_error")
        self.sq_log_error = self._sum("sq_log_error")

    def _sum(self, name: str):
        return self.add_variable(
            shape=(), initializer="zeros", dtype="float64", aggregation="sum", name=name
        )

    def update_state(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None):
        """Accumulate one batch.

        Args:
            y_true: depth in metres ``(B, H, W, 1)``; 0 marks invalid pixels.
            y_pred: predicted depth in metres, same shape.
            sample_weight: optional per-image ``(B,)`` or per-pixel weights (see `pixel_weights`).
        """
        y_true = tf.convert_to_tensor(y_true)
        weights = tf.reshape(pixel_weights(sample_weight, y_true), [-1])
        gt = tf.reshape(tf.cast(y_true, tf.float64), [-1])
        pred = tf.maximum(tf.reshape(tf.cast(y_pred, tf.float64), [-1]), MIN_DEPTH)
        valid = (gt > 0) & tf.math.is_finite(gt)
        weights = tf.where(valid, weights, tf.zeros_like(weights))
        gt = tf.where(valid, gt, tf.ones_like(gt))
        pred = tf.where(valid, pred, tf.ones_like(pred))
        diff = gt - pred
        self.count.assign_add(tf.reduce_sum(weights))
        self.sq_error.assign_add(tf.reduce_sum(weights * tf.square(diff)))
        self.abs_rel_error.assign_add(tf.reduce_sum(weights * tf.abs(diff) / gt))
        self.sq_log_error.assign_add(
            tf.reduce_sum(weights * tf.square(tf.math.log(gt) - tf.math.log(pred)))
        )

    def result(self) -> dict[str, tf.Tensor]:
        n = tf.convert_to_tensor(self.count)

        def mean(total):
            return tf.math.divide_no_nan(tf.convert_to_tensor(total), n)

        return {
            "rmse": tf.cast(tf.sqrt(mean(self.sq_error)), tf.float32),
            "abs_rel": tf.cast(mean(self.abs_rel_error), tf.float32),
            "log_rmse": tf.cast(tf.sqrt(mean(self.sq_log_error)), tf.float32),
        }
