"""MoCo: MGDA-like weights on tracked (bias-corrected) task gradients."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import project_simplex
from mtl_keras.balancing.base import GradientBalancer, Needs

NORMALIZATIONS = ("none", "l2_loss")
WEIGHT_UPDATES = ("projection", "softmax")


@keras.saving.register_keras_serializable(package="mtl_keras")
class MoCo(GradientBalancer):
    """Fernando et al., "Mitigating Gradient Bias in Multi-objective Learning: A Provably
    Convergent Approach", ICLR 2023.

    Every step, with ``t`` the step count (from 1):
    ``y_i <- y_i - beta_t (y_i - g_hat_i)`` (the tracked gradients ``Y``, a moving estimate that
    removes the bias of stochastic MGDA), ``lambda <- P(lambda - gamma_t (Y Y^T + rho I) lambda)``
    (one step on the min-norm problem of the tracked gradients) and the update ``d = Y^T lambda``;
    ``beta_t = beta / t^beta_sigma``, ``gamma_t = gamma / t^gamma_sigma``.

    The paper (Algorithm 1) and its later official code (Trade-Off-MOL) project ``lambda`` onto
    the simplex, ``P = project`` (``weight_update="projection"``, default) and track the raw
    stochastic gradients, ``g_hat_i = g_i`` (``normalization="none"``, default). LibMTL's version
    (from code the authors shared) takes ``P = softmax`` (``weight_update="softmax"``) and tracks
    ``g_hat_i = g_i L_i / ||g_i||`` (``normalization="l2_loss"``, with ``eps`` added to the norm).
    Defaults from LibMTL: ``beta = 0.5``, ``beta_sigma = 0.5``, ``gamma = 0.1``,
    ``gamma_sigma = 0.5``, ``rho = 0``, ``eps = 1e-8``; ``Y`` starts at 0 and ``lambda`` at
    ``1/T``. (LibMTL's NYUv2 run used ``beta = 0.99``, ``beta_sigma = 0``, ``gamma_sigma = 0``.)

    The tracked gradients are a (T, P) non-trainable variable, so this method needs the matrix
    of the shared variables (:meth:`aggregate`); **the trainer calls**
    :meth:`build_parameter_state` with their sizes once, before training (standalone, the first
    ``aggregate`` call creates it, eagerly). ``lambda`` and the step count are state too (saved,
    equal on every replica). :meth:`head_weights` is ``lambda``: logged as the task weights, and
    what task-specific variables get with ``head_weighting="weighted"``.

    Example:
        >>> b = MoCo(beta_sigma=0.0, beta=1.0, gamma=0.0)  # Y = J, lambda stays uniform
        >>> b.aggregate(tf.constant([[1.0, 0.0], [0.0, 2.0]])).numpy()
        array([0.5, 1. ], dtype=float32)
    """

    needs = Needs({"shared": "matrix"})

    def __init__(
        self,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
        normalization: str = "none",
        weight_update: str = "projection",
        eps: float = 1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown MoCo normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}"
            )
        if weight_update not in WEIGHT_UPDATES:
            raise ValueError(
                f"unknown MoCo weight_update {weight_update!r}; valid: {', '.join(WEIGHT_UPDATES)}"
            )
        rates = {"beta": beta, "beta_sigma": beta_sigma, "gamma": gamma}
        rates.update({"gamma_sigma": gamma_sigma, "rho": rho})
        negative = {k: v for k, v in rates.items() if not float(v) >= 0}
        if negative:
            raise ValueError(f"MoCo step sizes, decays and rho must be >= 0, got {negative}")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.gamma, self.gamma_sigma, self.rho = float(gamma), float(gamma_sigma), float(rho)
        self.normalization, self.weight_update, self.eps = normalization, weight_update, float(eps)

    def build_state(self, num_tasks: int) -> None:
        self.step_count = self.add_state("step_count", (), dtype="int64")
        uniform = keras.initializers.Constant(1.0 / num_tasks)
        self.task_weights = self.add_state("task_weights", (num_tasks,), uniform)

    def build_parameter_state(self, sizes) -> None:
        self.num_params = int(sum(int(s) for s in sizes))
        self.tracked = self.add_state("tracked", (self.num_tasks, self.num_params))

    def head_weights(self, losses, step):
        return tf.convert_to_tensor(self.task_weights)

    def aggregate(self, jacobian, losses=None, step=None):
        jacobian = tf.convert_to_tensor(jacobian)
        j32, losses, step = self._prepare_parameter_aggregate(jacobian, losses, step, "MoCo tracks")
        self.step_count.assign_add(1)
        t = tf.cast(self.step_count, tf.float32)
        beta = self.beta / tf.pow(t, self.beta_sigma)
        gamma = self.gamma / tf.pow(t, self.gamma_sigma)
        g = j32
        if self.normalization == "l2_loss":
            g = j32 * (losses / (tf.norm(j32, axis=1) + self.eps))[:, None]
        y = tf.convert_to_tensor(self.tracked)
        y = y - beta * (y - g)
        self.tracked.assign(y)
        lam = tf.convert_to_tensor(self.task_weights)
        gram = tf.matmul(y, y, transpose_b=True) + self.rho * tf.eye(self.num_tasks)
        lam = lam - gamma * tf.linalg.matvec(gram, lam)
        lam = project_simplex(lam) if self.weight_update == "projection" else tf.nn.softmax(lam)
        self.task_weights.assign(lam)
        return tf.cast(tf.linalg.matvec(y, lam, transpose_a=True), jacobian.dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "gamma": self.gamma,
            "gamma_sigma": self.gamma_sigma,
            "rho": self.rho,
            "normalization": self.normalization,
            "weight_update": self.weight_update,
            "eps": self.eps,
        }
