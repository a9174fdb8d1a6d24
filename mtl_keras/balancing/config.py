"""ConFIG: the conflict-free direction with equal cosine to every task gradient."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64, psd_pinv
from mtl_keras.balancing.base import GradientBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class ConFIG(GradientBalancer):
    """Liu, Chu & Thuerey, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks", ICLR 2025.

    ``g_u = U^+ w`` with ``U`` the unit gradients ``g_i / ||g_i||`` (rows) and ``w = 1``: the
    min-norm direction whose cosine with every task gradient is equal (positive); the update is
    ``(sum_i g_i . g_u / ||g_u||) g_u / ||g_u||``.

    From the Gramian: with the cosine matrix ``C = G / (n n^T)``, ``y = C^+ w`` and
    ``x = y / n`` we have ``g_u = J^T x`` and the weights are ``(1^T G x / x^T G x) x``. The
    pseudo-inverse (float64 eigendecomposition, cut-off ``T * eps32``) handles zero and
    linearly dependent gradients; zero gradients get weight 0. ``preference`` is ConFIG's
    optional weight vector ``w`` (TorchJD's ``pref_vector``).

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 3.0]])
        >>> ConFIG().aggregate(J).numpy().round(4)  # direction (1, 1)/sqrt(2), length 4/sqrt(2)
        array([2., 2.], dtype=float32)
    """

    def __init__(self, preference: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.preference = None if preference is None else [float(v) for v in preference]

    def build_state(self, num_tasks: int) -> None:
        if self.preference is not None and len(self.preference) != num_tasks:
            raise ValueError(
                f"ConFIG preference has {len(self.preference)} values for {num_tasks} tasks"
            )

    def weights_from_gramian(self, gramian, losses, step):
        g = f64(gramian)
        t = g.shape[-1]
        norms = tf.sqrt(tf.nn.relu(tf.linalg.diag_part(g)))
        cosine = tf.math.divide_no_nan(g, norms[:, None] * norms[None, :])
        pref = tf.ones([t], tf.float64) if self.preference is None else f64(self.preference)
        x = tf.math.divide_no_nan(tf.linalg.matvec(psd_pinv(cosine), pref), norms)
        gx = tf.linalg.matvec(g, x)
        w = tf.math.divide_no_nan(tf.reduce_sum(gx), tf.tensordot(x, gx, 1)) * x
        return tf.cast(w, tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "preference": self.preference}
