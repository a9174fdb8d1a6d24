"""Aligned-MTL: align the principal components of the task gradients."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import EPS32, f64, symmetrize
from mtl_keras.balancing.base import GradientBalancer

SCALE_MODES = ("min", "median", "rmse")


@keras.saving.register_keras_serializable(package="mtl_keras")
class AlignedMTL(GradientBalancer):
    """Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023.

    ``G = V diag(lambda) V^T`` (the T x T Gramian); ``B = sqrt(lambda_min) V diag(lambda)^-1/2
    V^T`` on the non-zero eigenvalues; weights ``a = B w``: the update ``J^T a`` is the sum of the
    gradients after orthogonalising them and giving every principal direction the length
    ``sqrt(lambda_min)`` (condition number 1).

    Eigenvalues below ``lambda_max * T * eps32`` are dropped (LibMTL's rank tolerance), computed
    in float64 with ``tf.linalg.eigh`` (LibMTL's ``torch.symeig`` no longer exists).
    ``preference`` ``w`` defaults to ones (LibMTL; TorchJD uses 1/T). ``scale_mode``: the length
    of the aligned directions, ``"min"`` (the paper: the smallest kept singular value),
    ``"median"`` or ``"rmse"`` (TorchJD's options). A zero Jacobian gets zero weights.

    Example:
        >>> J = tf.constant([[2.0, 0.0], [0.0, 1.0]])
        >>> AlignedMTL().aggregate(J).numpy()  # orthogonal: both scaled to the smaller norm
        array([1., 1.], dtype=float32)
    """

    def __init__(
        self, scale_mode: str = "min", preference: Sequence[float] | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if scale_mode not in SCALE_MODES:
            raise ValueError(
                f"unknown Aligned-MTL scale_mode {scale_mode!r}; valid: {', '.join(SCALE_MODES)}"
            )
        self.scale_mode = scale_mode
        self.preference = None if preference is None else [float(v) for v in preference]

    def build_state(self, num_tasks: int) -> None:
        if self.preference is not None and len(self.preference) != num_tasks:
            raise ValueError(
                f"Aligned-MTL preference has {len(self.preference)} values for {num_tasks} tasks"
            )

    def weights_from_gramian(self, gramian, losses, step):
        g = f64(gramian)
        t = g.shape[-1]
        lam, v = tf.linalg.eigh(symmetrize(g))
        keep = lam > tf.reduce_max(lam) * t * EPS32
        rank = tf.reduce_sum(tf.cast(keep, tf.int32))
        ascending = tf.sort(tf.where(keep, lam, tf.constant(float("inf"), tf.float64)))
        if self.scale_mode == "min":
            level = ascending[0]
        elif self.scale_mode == "median":
            level = 0.5 * (ascending[tf.maximum(rank - 1, 0) // 2] + ascending[rank // 2])
        else:
            level = tf.reduce_sum(tf.where(keep, lam, 0.0)) / tf.cast(rank, tf.float64)
        level = tf.where(rank > 0, level, tf.zeros_like(level))  # zero Jacobian
        inv_sqrt = tf.where(keep, tf.math.rsqrt(tf.where(keep, lam, 1.0)), tf.zeros_like(lam))
        b = tf.sqrt(tf.nn.relu(level)) * tf.matmul(v * inv_sqrt[None], v, transpose_b=True)
        pref = tf.ones([t], tf.float64) if self.preference is None else f64(self.preference)
        return tf.cast(tf.linalg.matvec(b, pref), tf.float32)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "scale_mode": self.scale_mode,
            "preference": self.preference,
        }
