"""IMTL-G: the update whose projections on every unit task gradient are equal."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64, psd_pinv
from mtl_keras.balancing.base import GradientBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class IMTLG(GradientBalancer):
    """Gradient part of Impartial Multi-Task Learning (Liu et al., ICLR 2021).

    ``d = sum_i a_i g_i`` with ``sum_i a_i = 1`` and ``d . u_i`` equal for every unit gradient
    ``u_i = g_i / ||g_i||``: the paper's closed form ``a_{2:T} = g_1 U^T (D U^T)^-1``,
    ``a_1 = 1 - sum a_{2:T}`` (``D`` and ``U`` the differences ``g_1 - g_i`` and ``u_1 - u_i``).

    Equal projections mean ``G a`` proportional to the norms ``n``, so ``a = G^+ n / 1^T G^+ n``
    (TorchJD's form): identical to the paper when G is invertible, and with a pseudo-inverse
    (float64 eigendecomposition, relative cut-off ``T * eps32``) it also copes with zero,
    duplicated or linearly dependent gradients, where LibMTL's ``torch.inverse`` fails. If
    ``1^T G^+ n`` vanishes (no such update exists) the weights fall back to the mean.
    ``scale="one"``: weights sum to 1 (the paper, LibMTL); ``"tasks"`` multiplies them by T.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 3.0]])
        >>> IMTLG().aggregate(J).numpy().round(4)  # projections 0.75 on both unit vectors
        array([0.75, 0.75], dtype=float32)
    """

    def __init__(self, scale: str = "one", **kwargs):
        super().__init__(**kwargs)
        if scale not in ("one", "tasks"):
            raise ValueError(f"IMTL-G scale must be 'one' or 'tasks', got {scale!r}")
        self.scale = scale

    def weights_from_gramian(self, gramian, losses, step):
        g = f64(gramian)
        t = g.shape[-1]
        norms = tf.sqrt(tf.nn.relu(tf.linalg.diag_part(g)))
        x = tf.linalg.matvec(psd_pinv(g), norms)
        total = tf.reduce_sum(x)
        ok = tf.abs(total) > 1e-9 * tf.reduce_sum(tf.abs(x))
        w = tf.where(
            ok, x / tf.where(ok, total, 1.0), tf.fill([t], tf.constant(1.0 / t, tf.float64))
        )
        if self.scale == "tasks":
            w *= float(t)
        return tf.cast(w, tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}
