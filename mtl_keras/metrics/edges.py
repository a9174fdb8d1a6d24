"""A cheap streaming boundary F-measure at one threshold with a pixel tolerance (training proxy)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from mtl_keras.metrics.segmentation import pixel_weights

Tensor = Any

IGNORE_VALUE = 255


@keras.saving.register_keras_serializable(package="mtl_keras")
class EdgeF(keras.metrics.Metric):
    """Boundary precision, recall and F at a fixed threshold, pooled over the set.

    A training-time proxy, not the benchmark: the published edge numbers (odsF, oisF and AP of the
    BSDS protocol, Martin et al., TPAMI 2004, as used by Vandenhende et al., TPAMI 2022, via SEISM)
    sweep thresholds, thin the predictions and match boundary pixels one-to-one within a tolerance
    of a fraction of the image diagonal; that evaluation is a separate, offline piece.

    Here predicted edges are ``pred >= threshold`` and label edges ``label > 0.5``, both restricted
    to valid pixels (label ≠ 255). A predicted edge pixel is correct when a label edge lies within
    ``tolerance`` pixels (Chebyshev distance, i.e. inside a (2·tolerance + 1)² window), and a label
    edge pixel is recalled when a predicted edge lies within ``tolerance`` pixels; both tests are a
    max-pooling dilation. Matching is many-to-one (a label pixel can justify several predicted
    pixels), so with a tolerance this is more lenient than the BSDS matching. Over the set:

        precision = Σ correct predicted / Σ predicted,  recall = Σ recalled label / Σ label,
        f = 2 · precision · recall / (precision + recall),

    each 0 when its denominator is 0. The counts (float64) are summed across replicas under a
    ``tf.distribute`` strategy.

    Args:
        threshold: probability at or above which a pixel is a predicted edge.
        tolerance: matching radius in pixels (0 = exact pixel agreement).
        name: metric name.
        dtype: Keras dtype policy of the metric; the state is float64, results are float32.

    Example:
        >>> import numpy as np
        >>> m = EdgeF(tolerance=1)
        >>> m.update_state(np.array([[[[1.0], [0.0], [0.0]]]]), np.array([[[[0.0], [0.9], [0.8]]]]))
        >>> {k: round(float(v), 3) for k, v in m.result().items()}
        {'f': 0.667, 'precision': 0.5, 'recall': 1.0}
    """

    def __init__(
        self, threshold: float = 0.5, tolerance: int = 0, name: str = "edge_f", dtype: Any = None
    ):
        super().__init__(name=name, dtype=dtype)
        if int(tolerance) != tolerance or tolerance < 0:
            raise ValueError(
                f"EdgeF expects tolerance to be a non-negative integer (pixels), got {tolerance!r}."
            )
        self.threshold = float(threshold)
        self.tolerance = int(tolerance)
        self.correct_predicted = self._sum("correct_predicted")
        self.predicted = self._sum("predicted")
        self.recalled = self._sum("recalled")
        self.label_edges = self._sum("label_edges")

    def _sum(self, name: str):
        return self.add_variable(
            shape=(), initializer="zeros", dtype="float64", aggregation="sum", name=name
        )

    def _dilate(self, mask: tf.Tensor) -> tf.Tensor:
        if self.tolerance == 0:
            return mask
        size = 2 * self.tolerance + 1
        return tf.nn.max_pool2d(mask, ksize=size, strides=1, padding="SAME")

    def update_state(self, y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None):
        """Accumulate one batch.

        Args:
            y_true: edge labels ``(B, H, W, 1)`` in {0, 1}; 255 marks ignored pixels.
            y_pred: edge probabilities ``(B, H, W, 1)`` in [0, 1].
            sample_weight: optional per-image ``(B,)`` or per-pixel weights (see `pixel_weights`).
        """
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank == 3:
            y_true = y_true[..., None]
        gt = tf.cast(y_true, tf.float32)
        pred = tf.reshape(tf.cast(y_pred, tf.float32), tf.shape(gt))
        weights = pixel_weights(sample_weight, gt)
        valid = gt != IGNORE_VALUE
        gt_edge = tf.cast((gt > 0.5) & valid, tf.float32)
        pred_edge = tf.cast((pred >= self.threshold) & valid, tf.float32)
        near_gt = tf.cast(self._dilate(gt_edge), tf.float64)
        near_pred = tf.cast(self._dilate(pred_edge), tf.float64)
        gt_edge = tf.cast(gt_edge, tf.float64) * weights
        pred_edge = tf.cast(pred_edge, tf.float64) * weights
        self.correct_predicted.assign_add(tf.reduce_sum(pred_edge * near_gt))
        self.predicted.assign_add(tf.reduce_sum(pred_edge))
        self.recalled.assign_add(tf.reduce_sum(gt_edge * near_pred))
        self.label_edges.assign_add(tf.reduce_sum(gt_edge))

    def result(self) -> dict[str, tf.Tensor]:
        precision = tf.math.divide_no_nan(
            tf.convert_to_tensor(self.correct_predicted), tf.convert_to_tensor(self.predicted)
        )
        recall = tf.math.divide_no_nan(
            tf.convert_to_tensor(self.recalled), tf.convert_to_tensor(self.label_edges)
        )
        f = tf.math.divide_no_nan(2.0 * precision * recall, precision + recall)
        return {
            "f": tf.cast(f, tf.float32),
            "precision": tf.cast(precision, tf.float32),
            "recall": tf.cast(recall, tf.float32),
        }

    def get_config(self) -> dict:
        return {**super().get_config(), "threshold": self.threshold, "tolerance": self.tolerance}
