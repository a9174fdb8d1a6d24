"""FAMO: fast adaptive multitask optimisation, O(1) in the number of tasks."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import adam_update
from mtl_keras.balancing.base import LossBalancer, Needs


@keras.saving.register_keras_serializable(package="mtl_keras")
class FAMO(LossBalancer):
    """Liu et al., "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023.

    ``z = softmax(xi)``; ``L = sum_i z_i log(L_i - L*_i + eps) / c`` with
    ``c = sum_i z_i / (L_i - L*_i + eps)`` held constant. After the model's step the same batch is
    evaluated again and the logits ``xi`` take one Adam step along
    ``J_softmax^T delta``, ``delta_i = log(L_i^before) - log(L_i^after)`` (each loss shifted by
    ``-L*_i + eps``), with L2 weight decay ``gamma``: tasks whose loss fell more than the average
    lose weight.

    **Trainer hook**: ``needs.losses_after_step`` is True; after ``optimizer.apply`` the
    trainer re-evaluates the losses of the same batch (no gradient), all-reduces them like
    ``global_losses`` and calls :meth:`after_step` with the losses before and after.

    The objective returned is the gradient-equivalent ``sum_i w_i L_i`` with
    ``w_i = z_i / (c (L_i - L*_i + eps))`` computed from the all-reduced losses (so replica
    gradients sum to the global one; the weights sum to 1). Defaults from the paper's code:
    ``w_lr = 0.025``, ``L* = 0``, ``eps = 1e-8``; ``gamma = 1e-3`` as in the authors' NYUv2 and
    CityScapes runs and LibMTL (their standalone ``famo.py`` uses 0.01, their
    ``weight_methods.py`` 1e-5). The authors' gradient clipping (``max_norm = 1``) is the
    optimizer's job here (``clipnorm``). Logits and Adam moments are non-trainable variables.

    Example:
        >>> b = FAMO(); b.setup(["a", "b"])
        >>> b.combine(tf.ones(2), tf.constant([1.0, 3.0]), 0)[1].numpy().round(3)
        array([0.75, 0.25], dtype=float32)
    """

    needs = Needs({"loss": "losses"}, losses_after_step=True)

    def __init__(
        self,
        w_lr: float = 0.025,
        gamma: float = 1e-3,
        min_losses: float = 0.0,
        eps: float = 1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.w_lr, self.gamma = float(w_lr), float(gamma)
        self.min_losses, self.eps = float(min_losses), float(eps)

    def build_state(self, num_tasks: int) -> None:
        self.logits = self.add_state("logits", (num_tasks,))
        self.adam_m = self.add_state("adam_m", (num_tasks,))
        self.adam_v = self.add_state("adam_v", (num_tasks,))
        self.adam_count = self.add_state("adam_count", (), dtype="int64")

    def _shifted(self, losses):
        return tf.cast(losses, tf.float32) - self.min_losses + self.eps

    def combine(self, losses, global_losses, step):
        g = tf.stop_gradient(losses if global_losses is None else global_losses)
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        inv = z / self._shifted(g)
        w = inv / tf.reduce_sum(inv)
        return tf.reduce_sum(w * tf.cast(losses, tf.float32)), w

    def after_step(self, losses_before, losses_after, step) -> None:
        delta = tf.math.log(self._shifted(losses_before)) - tf.math.log(self._shifted(losses_after))
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        grad = z * (delta - tf.reduce_sum(z * delta))  # J_softmax^T delta
        adam_update(
            self.logits, grad, self.adam_m, self.adam_v, self.adam_count, self.w_lr, self.gamma
        )

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "w_lr": self.w_lr,
            "gamma": self.gamma,
            "min_losses": self.min_losses,
            "eps": self.eps,
        }
