"""UPGrad: the mean of the task gradients, each projected onto the dual cone."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64, nonneg_qp
from mtl_keras.balancing.base import GradientBalancer


def dual_cone_weights(gramian: tf.Tensor, lower: tf.Tensor, reg_eps: float = 0.0) -> tf.Tensor:
    """Weights of the projections of ``u_k^T J`` onto the dual cone ``{d : J d >= 0}``.

    The projection of ``J^T u`` is ``J^T v`` with ``v = argmin_{v >= u} v^T G v`` (the dual of
    the projection, Quinton & Rey 2024, Prop. 1): with ``v = u + mu`` a non-negative QP in
    ``mu`` with linear term ``G u``, solved exactly by :func:`nonneg_qp`.

    Args:
        gramian: (T, T) Gramian.
        lower: (B, T) one lower bound ``u`` per row.
        reg_eps: added to the diagonal of the trace-normalised Gramian (TorchJD uses 1e-4 for
            its solver's sake; 0 is exact here).

    Returns:
        (B, T) float64 weights ``v``.
    """
    g, u = f64(gramian), f64(lower)
    t = g.shape[-1]
    if reg_eps:
        g = g + reg_eps * tf.linalg.trace(g) / t * tf.eye(t, dtype=tf.float64)
    return u + nonneg_qp(g, tf.matmul(u, g))


def preference_vector(preference: Sequence[float] | None, num_tasks: int) -> tf.Tensor:
    if preference is None:
        return tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64))
    if len(preference) != num_tasks:
        raise ValueError(f"preference has {len(preference)} values for {num_tasks} tasks")
    return tf.constant(preference, tf.float64)


@keras.saving.register_keras_serializable(package="mtl_keras")
class UPGrad(GradientBalancer):
    """Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (TorchJD).

    ``d = sum_i p_i pi_J(g_i)``: every gradient is projected onto the dual cone
    ``{d : g_j . d >= 0 for all j}`` and the projections averaged (``p = 1/T``, the paper's
    UPGrad; ``preference`` gives other weights). The update never conflicts with any task, equals
    the mean when no pair conflicts, and is linear under scaling of the Jacobian.

    Each projection is a T x T quadratic program on the Gramian (:func:`dual_cone_weights`),
    solved in the graph and exactly for up to ``MAX_ENUMERATE`` tasks (TorchJD solves T QPs on
    the CPU with quadprog, after normalising G by its trace and adding ``reg_eps = 1e-4``:
    ``reg_eps`` here defaults to 0).

    Example:
        >>> J = tf.constant([[1.0, 0.0], [-1.0, 1.0]])
        >>> UPGrad().aggregate(J).numpy().round(4)
        array([0.25, 0.75], dtype=float32)
    """

    def __init__(self, preference: Sequence[float] | None = None, reg_eps: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.preference = None if preference is None else [float(v) for v in preference]
        self.reg_eps = float(reg_eps)

    def build_state(self, num_tasks: int) -> None:
        preference_vector(self.preference, num_tasks)  # refuses a preference of another length

    def weights_from_gramian(self, gramian, losses, step):
        pref = preference_vector(self.preference, gramian.shape[-1])
        v = dual_cone_weights(gramian, tf.linalg.diag(pref), self.reg_eps)
        return tf.cast(tf.reduce_sum(v, axis=0), tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "preference": self.preference, "reg_eps": self.reg_eps}
