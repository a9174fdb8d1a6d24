"""MGDA: the minimum-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing.base import GradientBalancer

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _min_norm_pair(g11, g12, g22):
    """Closed form of ``min_{c in [0,1]} ||c u + (1-c) v||^2`` from the three inner products."""
    denom = g11 + g22 - 2.0 * g12
    c = tf.where(denom > 1e-12, (g22 - g12) / tf.maximum(denom, 1e-12), tf.ones_like(denom))
    c = tf.clip_by_value(c, 0.0, 1.0)
    cost = c * c * g11 + 2.0 * c * (1.0 - c) * g12 + (1.0 - c) * (1.0 - c) * g22
    return c, cost


def min_norm_weights(gramian: tf.Tensor, max_iter: int = 250, tol: float = 1e-5) -> tf.Tensor:
    """Frank-Wolfe solver of ``min_{a in simplex} a^T G a`` (Sener & Koltun, NeurIPS 2018, Alg. 2).

    Starts from the best pair (exact for two tasks), then moves towards the vertex with the smallest
    ``(G a)_t`` with an exact line search, for at most ``max_iter`` steps or until the change in
    ``a`` is below ``tol``. Runs in the graph with a fixed iteration budget.
    """
    g = tf.cast(gramian, tf.float32)
    t = tf.shape(g)[0]
    diag = tf.linalg.diag_part(g)
    # best pair initialisation
    c, cost = _min_norm_pair(diag[:, None], g, diag[None, :])
    eye = tf.eye(t, dtype=tf.bool)
    cost = tf.where(eye, diag[:, None] + tf.zeros_like(g), cost)  # single vertices on the diagonal
    c = tf.where(eye, tf.ones_like(c), c)
    best = tf.argmin(tf.reshape(cost, [-1]), output_type=tf.int32)
    i, j = best // t, best % t
    ci = c[i, j]
    alpha = ci * tf.one_hot(i, t) + (1.0 - ci) * tf.one_hot(j, t)

    def body(k, alpha, done):
        ga = tf.linalg.matvec(g, alpha)
        vertex = tf.argmin(ga, output_type=tf.int32)
        aga = tf.tensordot(alpha, ga, 1)
        gamma, _ = _min_norm_pair(aga, ga[vertex], g[vertex, vertex])
        new = gamma * alpha + (1.0 - gamma) * tf.one_hot(vertex, t)
        change = tf.reduce_sum(tf.abs(new - alpha))
        return k + 1, tf.where(done, alpha, new), done | (change < tol)

    _, alpha, _ = tf.while_loop(
        lambda k, a, d: (k < max_iter) & tf.logical_not(d),
        body,
        (tf.constant(0), alpha, tf.constant(False)),
        maximum_iterations=max_iter,
    )
    return alpha


@keras.saving.register_keras_serializable(package="mtl_keras")
class MGDA(GradientBalancer):
    """Multiple-gradient descent as multi-objective optimisation (Sener & Koltun, NeurIPS 2018).

    ``a* = argmin_{a in simplex} ||sum_i a_i g_i / n_i||^2``, update ``sum_i a*_i g_i / n_i``, where
    the normaliser ``n_i`` is 1 (``"none"``, the paper's formulation and the default), ``||g_i||``
    (``"l2"``), ``L_i`` (``"loss"``) or ``L_i ||g_i||`` (``"loss+"``, used in the authors' code).
    With ``source="representation"`` the gradients are taken with respect to the shared
    representation: MGDA-UB, whose weights are then applied to the losses in one backward pass.
    The weights sum to 1 (times ``scale``; ``scale="tasks"`` multiplies by T to match the
    magnitude of the summed loss).

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 2.0]])
        >>> MGDA().aggregate(J).numpy().round(3)  # min-norm point of the segment
        array([0.8, 0.4], dtype=float32)
    """

    def __init__(
        self,
        normalization: str = "none",
        max_iter: int = 250,
        tol: float = 1e-5,
        scale: str = "one",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown MGDA normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}"
            )
        if scale not in ("one", "tasks"):
            raise ValueError(f"MGDA scale must be 'one' or 'tasks', got {scale!r}")
        self.normalization, self.max_iter, self.tol, self.scale = (
            normalization,
            max_iter,
            tol,
            scale,
        )

    def weights_from_gramian(self, gramian, losses, step):
        g = tf.cast(gramian, tf.float32)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
        losses = tf.cast(losses, tf.float32)
        n = {
            "none": tf.ones_like(norms),
            "l2": norms,
            "loss": losses,
            "loss+": losses * norms,
        }[self.normalization]
        n = tf.where(n > 1e-12, n, tf.ones_like(n))  # zero gradients or losses: no rescaling
        alpha = min_norm_weights(g / (n[:, None] * n[None, :]), self.max_iter, self.tol)
        w = alpha / n
        if self.scale == "tasks":
            w = w * tf.cast(tf.shape(g)[0], tf.float32)
        return w

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "normalization": self.normalization,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "scale": self.scale,
        }
