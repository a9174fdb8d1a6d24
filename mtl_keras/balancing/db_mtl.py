"""DB-MTL: log-transformed losses and gradients rescaled to the largest EMA norm."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing.base import GradientBalancer, Needs


@keras.saving.register_keras_serializable(package="mtl_keras")
class DBMTL(GradientBalancer):
    """Lin et al., "Dual-Balancing for Multi-Task Learning", 2023 (arXiv:2308.12029).

    Loss balancing: task i contributes ``log(L_i + eps)``, whose gradient is
    ``g_i / (L_i + eps)``. Gradient balancing: ``ghat_i <- beta_t ghat_i + (1 - beta_t)
    g_i / (L_i + eps)`` with ``beta_t = beta / t^beta_sigma``; update
    ``sum_i (max_j ||ghat_j|| / ||ghat_i||) ghat_i``: every task moves as far as the largest.

    The EMA needs the gradient vectors, so this method uses :meth:`aggregate` and keeps a (T, P)
    buffer (``ghat`` starts at 0, as in LibMTL). Its size depends on the shared variables, so
    **the trainer calls** :meth:`build_parameter_state` with their sizes once, in the distribution
    scope, before training; standalone, the first ``aggregate`` call creates it (eagerly). The
    buffer is a non-trainable variable (saved with the model; T x P floats of memory).
    Task-specific variables get the log-loss gradients (:meth:`head_weights` = ``1/(L + eps)``),
    as in LibMTL. Defaults from LibMTL: ``beta = 0.9``, ``beta_sigma = 0``, ``eps = 1e-8``.

    Example:
        >>> b = DBMTL(beta=0.0)  # no EMA: unit-loss gradients rescaled to the largest norm
        >>> b.aggregate(tf.constant([[1.0, 0.0], [0.0, 2.0]])).numpy()
        array([2., 2.], dtype=float32)
    """

    needs = Needs({"shared": "matrix"})

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, eps: float = 1e-8, **kwargs):
        super().__init__(**kwargs)
        self.beta, self.beta_sigma, self.eps = float(beta), float(beta_sigma), float(eps)

    def build_state(self, num_tasks: int) -> None:
        self.step_count = self.add_state("step_count", (), dtype="int64")

    def build_parameter_state(self, sizes) -> None:
        self.num_params = int(sum(int(s) for s in sizes))
        self.grad_buffer = self.add_state("grad_buffer", (self.num_tasks, self.num_params))

    def head_weights(self, losses, step):
        return 1.0 / (tf.cast(losses, tf.float32) + self.eps)

    def aggregate(self, jacobian, losses=None, step=None):
        jacobian = tf.convert_to_tensor(jacobian)
        j32, losses, step = self._prepare_parameter_aggregate(
            jacobian, losses, step, "DB-MTL's buffer holds"
        )
        self.step_count.assign_add(1)
        beta = self.beta / tf.pow(tf.cast(self.step_count, tf.float32), self.beta_sigma)
        g = j32 * self.head_weights(losses, step)[:, None]
        buffer = g + beta * (tf.convert_to_tensor(self.grad_buffer) - g)
        self.grad_buffer.assign(buffer)
        norms = tf.norm(buffer, axis=1)
        alpha = tf.reduce_max(norms) / (norms + self.eps)
        return tf.cast(tf.linalg.matvec(buffer, alpha, transpose_a=True), jacobian.dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "eps": self.eps,
        }
