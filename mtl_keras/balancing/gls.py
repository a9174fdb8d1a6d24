"""GLS: the geometric mean of the task losses."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing.base import LossBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class GeometricLossStrategy(LossBalancer):
    """Chennupati et al., "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss
    Strategy for Multi-Task Learning", CVPR Workshops 2019.

    ``L = (prod_i L_i)^(1/T)``, computed as ``exp(mean_i log L_i)`` so that many tasks neither
    overflow nor underflow. Its gradient is ``sum_i w_i grad L_i`` with ``w_i = L / (T L_i)``; the
    objective returned is that weighted sum with ``w`` computed from the all-reduced losses and
    held constant, so under ``tf.distribute`` the summed replica gradients equal the gradient of
    the geometric mean of the global losses (its value equals ``L`` on one device). Losses are
    clamped at ``eps = 1e-12`` before the logarithm (the method needs positive losses).

    Example:
        >>> b = GeometricLossStrategy(); b.setup(["a", "b"])
        >>> round(float(b.combine(tf.constant([1.0, 4.0]), None, 0)[0]), 4)
        2.0
    """

    def __init__(self, eps: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def combine(self, losses, global_losses, step):
        g = tf.stop_gradient(losses if global_losses is None else global_losses)
        g = tf.maximum(tf.cast(g, tf.float32), self.eps)
        mean = tf.exp(tf.reduce_mean(tf.math.log(g)))
        w = tf.stop_gradient(mean / (tf.cast(tf.size(g), tf.float32) * g))
        return tf.reduce_sum(w * tf.cast(losses, tf.float32)), w

    def get_config(self) -> dict:
        return {**super().get_config(), "eps": self.eps}
