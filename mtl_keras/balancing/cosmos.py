"""COSMOS: a preference-weighted sum of the losses with a cosine reward for following the
preference."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64
from mtl_keras.balancing._preference import Preference, preference_vector, stored
from mtl_keras.balancing.base import LossBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class COSMOS(LossBalancer):
    """Ruchte & Grabocka, "Scalable Pareto Front Approximation for Deep Multi-Objective
    Learning", ICDM 2021.

    ``L = r^T L - lambda cos(r, L)``, ``cos(r, L) = r^T L / (||r|| ||L||)``: the
    preference-weighted sum of the losses minus a reward for a loss vector pointing along the
    preference ``r``. Its gradient is
    ``w = r - lambda (r / (||r|| ||L||) - cos(r, L) L / ||L||^2)``; at ``L = 0`` the cosine has
    no direction and ``w = r``.

    Defaults: ``penalty`` (the paper's lambda) ``= 2``, the authors' code's default (tuned for
    Multi-MNIST; the paper uses 0.01 to 8 depending on the data set); the preference is uniform
    (``1/T``) unless given as a sequence in task order or a mapping by task name, every value
    positive. The full method also draws ``r`` from a Dirichlet distribution every step and feeds
    it to the network, so that one network covers the Pareto front; that conditioning is part of
    the network, and this balancer scalarises the losses for the one preference it is given.

    The cosine reward is measured on the raw losses, so a uniform preference asks for equal
    losses. When the losses differ in scale, the weights of the small ones turn negative: the
    method trains those losses upward, toward the ray. For example, at ``L = (0.52, 0.70, 0.19,
    0.05)`` (cross-entropy, L1 depth, normals, edges of a dense four-task network),
    ``r = 1/4`` and ``penalty = 2``, ``w = (0.19, 0.56, -0.48, -0.77)``. Normalise the losses or
    choose the preference for their scales before using the cosine term on such tasks.

    The objective returned is the gradient-equivalent ``sum_i w_i L_i``, with ``w`` computed from
    the all-reduced losses and held constant, so the replicas' gradients sum to the gradient of
    the global batch's objective.

    Example:
        >>> b = COSMOS(preference=[0.5, 0.5]); b.setup(["a", "b"])
        >>> b.combine(tf.ones(2), tf.constant([1.0, 1.0]), 0)[1].numpy()  # already on the ray
        array([0.5, 0.5], dtype=float32)
    """

    def __init__(self, preference: Preference = None, penalty: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        if not float(penalty) >= 0:
            raise ValueError(
                f"COSMOS penalty must be >= 0 (2.0 in the authors' code), got {penalty}"
            )
        self.preference, self.penalty = stored(preference), float(penalty)

    def build_state(self, num_tasks: int) -> None:
        self.preference_weights = preference_vector(self.preference, self.task_names, "COSMOS")

    def combine(self, losses, global_losses, step):
        g = f64(tf.stop_gradient(losses if global_losses is None else global_losses))
        r = f64(self.preference_weights)
        inv = tf.math.divide_no_nan(1.0, tf.norm(g))  # 1 / ||L||, 0 at L = 0
        cos = tf.tensordot(r, g, 1) * inv / tf.norm(r)
        w = tf.cast(r - self.penalty * (r * inv / tf.norm(r) - cos * g * inv * inv), tf.float32)
        return tf.reduce_sum(w * tf.cast(losses, tf.float32)), w

    def get_config(self) -> dict:
        return {**super().get_config(), "preference": self.preference, "penalty": self.penalty}
