"""PCGrad: project each task gradient off the gradients it conflicts with."""

from __future__ import annotations

import random

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64, partner_orders, step_seed
from mtl_keras.balancing.base import GradientBalancer


def pcgrad_weights(gramian: tf.Tensor, orders: tf.Tensor) -> tf.Tensor:
    """PCGrad as weights from the Gramian.

    Every projected gradient stays a combination ``c_i^T J`` of the original ones, so with
    ``G = J J^T`` the inner products needed are ``c_i^T G e_j``. Task ``i`` visits the other tasks
    in the order ``orders[i]`` (T, T-1) and, when ``c_i^T G e_j < 0``, subtracts
    ``(c_i^T G e_j / G_jj) e_j``; the update is ``sum_i c_i^T J``, i.e. ``w = sum_i c_i``.
    """
    g = f64(gramian)
    t = g.shape[-1]
    c = tf.eye(t, dtype=tf.float64)
    diag = tf.linalg.diag_part(g)
    for k in range(t - 1):
        j = orders[:, k]
        partner = tf.one_hot(j, t, dtype=tf.float64)  # (T, T) row i = e_{j_i}
        dot = tf.reduce_sum(tf.matmul(c, g) * partner, axis=1)
        coef = tf.where(dot < 0, tf.math.divide_no_nan(dot, tf.gather(diag, j)), tf.zeros_like(dot))
        c = c - coef[:, None] * partner
    return tf.cast(tf.reduce_sum(c, axis=0), tf.float32)


@keras.saving.register_keras_serializable(package="mtl_keras")
class PCGrad(GradientBalancer):
    """Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.

    For each task i, for the other tasks j in a random order: if ``g_i^PC . g_j < 0`` then
    ``g_i^PC -= (g_i^PC . g_j / ||g_j||^2) g_j``; the update is ``sum_i g_i^PC`` (Algorithm 1).

    Computed exactly on the T x T Gramian (see :func:`pcgrad_weights`), as TorchJD does: no
    projection of parameter vectors. Each task draws its own order of the *other* tasks (the
    paper; LibMTL also visits ``j = i``; the official TF code discards its shuffle). Orders are
    stateless draws seeded by ``(seed, step)``: identical on every replica and reproducible.
    ``reduction="sum"`` (the paper, LibMTL) or ``"mean"`` (the CAGrad repository's variant scale).
    For two tasks the update never conflicts with either gradient.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [-1.0, 1.0]])
        >>> PCGrad(seed=0).aggregate(J).numpy()  # (1, 0)->(0.5, 0.5); (-1, 1)->(0, 1)
        array([0.5, 1.5], dtype=float32)
    """

    stochastic = True

    def __init__(self, seed: int | None = None, reduction: str = "sum", **kwargs):
        super().__init__(**kwargs)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"PCGrad reduction must be 'sum' or 'mean', got {reduction!r}")
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
        self.reduction = reduction

    def weights_from_gramian(self, gramian, losses, step):
        t = gramian.shape[-1]
        w = pcgrad_weights(gramian, partner_orders(t, step_seed(self.seed, step)))
        return w / float(t) if self.reduction == "mean" else w

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed, "reduction": self.reduction}
