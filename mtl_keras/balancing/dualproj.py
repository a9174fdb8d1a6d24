"""DualProj: the mean gradient projected onto the dual cone of the task gradients."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing.base import GradientBalancer
from mtl_keras.balancing.upgrad import dual_cone_weights, preference_vector


@keras.saving.register_keras_serializable(package="mtl_keras")
class DualProj(GradientBalancer):
    """Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (TorchJD), after
    the projection of Lopez-Paz & Ranzato, "Gradient Episodic Memory", NeurIPS 2017 (Eq. 11).

    ``d = pi_J(sum_i p_i g_i)``: the mean gradient (``p = 1/T``) projected onto the dual cone
    ``{d : g_j . d >= 0 for all j}``, i.e. the closest non-conflicting direction. Solved as one
    T x T quadratic program on the Gramian (:func:`~mtl_keras.balancing.upgrad.dual_cone_weights`),
    exactly for up to ``MAX_ENUMERATE`` tasks; ``reg_eps`` as in UPGrad (TorchJD: 1e-4, here 0).

    Example:
        >>> J = tf.constant([[1.0, 0.0], [-1.0, 1.0]])
        >>> DualProj().aggregate(J).numpy().round(4)  # mean (0, 0.5) is already non-conflicting
        array([0. , 0.5], dtype=float32)
    """

    def __init__(self, preference: Sequence[float] | None = None, reg_eps: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.preference = None if preference is None else [float(v) for v in preference]
        self.reg_eps = float(reg_eps)

    def build_state(self, num_tasks: int) -> None:
        preference_vector(self.preference, num_tasks)  # refuses a preference of another length

    def weights_from_gramian(self, gramian, losses, step):
        pref = preference_vector(self.preference, gramian.shape[-1])
        v = dual_cone_weights(gramian, pref[None], self.reg_eps)
        return tf.cast(v[0], tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "preference": self.preference, "reg_eps": self.reg_eps}
