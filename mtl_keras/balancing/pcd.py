"""PCD: follow the primary task's gradient, bent just enough to guarantee the others progress."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import EPS32, f64, nonneg_qp
from mtl_keras.balancing.base import GradientBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class PCD(GradientBalancer):
    """Varam & AlHajri, "Not All Objectives Are Born Equal: Priority-Constrained Descent for
    Hierarchical Multi-Objective Optimization", TMLR 2026 (arXiv:2606.29521).

    The first task is the primary objective, the others are secondary: the update stays as close
    as possible to the primary gradient while every secondary gets at least the fraction ``tau``
    of the first-order progress a step along its own normalised gradient would give,
    ``d~ = argmin_d ||d - g~_1||^2 / 2  s.t.  g~_j . d >= tau ||g~_j||^2  (j >= 2)`` (Def. 4.1),
    with ``g~_i = s_i g_i`` and ``s_i = 1 / sqrt(v^_i + eps)``, ``v^_i`` the bias-corrected EMA
    (decay ``beta``) of ``||g_i||^2`` over the steps (Def. 4.5: Adam's second moment with one
    scalar per task). By the KKT conditions ``d~ = g~_1 + sum_j mu_j g~_j`` with ``mu >= 0``, the
    solution of the non-negative QP ``min_mu mu^T G~_ss mu / 2 - b^T mu``,
    ``b_j = tau G~_jj - G~_j1``: weights from the Gramian, solved exactly in the graph
    (:func:`~mtl_keras.balancing._linalg.nonneg_qp`; the authors enumerate the working sets,
    TorchJD runs Goldfarb-Idnani, same minimiser). The update is ``d~`` rescaled to ``||g_1||``
    (the step size of plain gradient descent on the primary).

    Special cases, as in the authors' code: a zero primary gradient gives a zero update; if the
    constraints cannot all hold (only with three or more tasks, e.g. two exactly opposite
    secondary gradients), they are dropped for the step and the update is ``g_1``; a direction
    that is zero up to the Gramian's rounding gives a zero update. ``tau = 0`` only keeps the
    secondaries from getting worse to first order. Because of the normalisation, multiplying a
    secondary loss by a constant does not change the update.

    Defaults (the paper's): ``tau = 0.02`` (its representative setting; a sequence gives one
    value per secondary task), ``beta = 0.999``, ``eps = 1e-8`` inside the square root (the
    paper's form; the authors' research code added it outside, which agrees to float32
    precision). The EMA and its step count are non-trainable state, so PCD is bound to its task
    count. The first task is the first of the model's tasks.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [-1.0, 1.0]])  # the secondary conflicts with g_1
        >>> PCD(tau=0.0).aggregate(J).numpy().round(4)  # g_1 projected onto g_2 . d >= 0
        array([0.7071, 0.7071], dtype=float32)
    """

    def __init__(
        self,
        tau: float | Sequence[float] = 0.02,
        beta: float = 0.999,
        eps: float = 1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tau = [float(v) for v in tau] if isinstance(tau, Sequence) else float(tau)
        taus = self.tau if isinstance(self.tau, list) else [self.tau]
        if not all(0.0 <= v <= 1.0 for v in taus):
            raise ValueError(f"PCD tau must be in [0, 1], got {tau}")
        if not 0.0 <= float(beta) < 1.0:
            raise ValueError(f"PCD beta must be in [0, 1), got {beta}")
        if not float(eps) >= 0.0:
            raise ValueError(f"PCD eps must be >= 0, got {eps}")
        self.beta, self.eps = float(beta), float(eps)

    def _taus(self, num_tasks: int) -> list[float]:
        if not isinstance(self.tau, list):
            return [self.tau] * (num_tasks - 1)
        if len(self.tau) != num_tasks - 1:
            raise ValueError(
                f"PCD tau has {len(self.tau)} values for {num_tasks - 1} secondary tasks; give "
                "one per task after the first, or one float"
            )
        return self.tau

    def build_state(self, num_tasks: int) -> None:
        self._taus(num_tasks)
        self.sq_norm_ema = self.add_state("squared_norm_ema", (num_tasks,))
        self.steps = self.add_state("steps", (), dtype="int64")

    def _scales(self, sq_norms):
        """Update the EMA of the squared norms; return the scales ``1 / sqrt(v^ + eps)``."""
        ema = self.beta * f64(self.sq_norm_ema) + (1.0 - self.beta) * sq_norms
        self.sq_norm_ema.assign(tf.cast(ema, tf.float32))
        self.steps.assign_add(1)
        v_hat = ema / (1.0 - tf.pow(tf.constant(self.beta, tf.float64), f64(self.steps)))
        root = tf.sqrt(v_hat + self.eps)
        return tf.where(root > 0, 1.0 / tf.where(root > 0, root, 1.0), tf.zeros_like(root))

    def weights_from_gramian(self, gramian, losses, step):
        g = f64(gramian)
        t = g.shape[-1]
        sq = tf.nn.relu(tf.linalg.diag_part(g))
        s = self._scales(sq)
        gn = g * s[:, None] * s[None, :]
        w = tf.one_hot(0, t, dtype=tf.float64)
        if t > 1:
            secondary = gn[1:, 1:]
            b = tf.constant(self._taus(t), tf.float64) * tf.linalg.diag_part(secondary) - gn[1:, 0]
            mu = nonneg_qp(secondary, -b[None])[0]
            slack = tf.linalg.matvec(secondary, mu) - b
            tol = 1e-6 * tf.reduce_max(tf.linalg.diag_part(gn))
            feasible = tf.reduce_all(slack >= -tol)
            w = tf.concat([w[:1], tf.where(feasible, mu, tf.zeros_like(mu))], 0)
        norm2 = tf.tensordot(w, tf.linalg.matvec(gn, w), 1)
        magnitude = tf.square(tf.reduce_sum(tf.abs(w) * tf.sqrt(tf.linalg.diag_part(gn))))
        keep = (sq[0] > 0) & (norm2 > 10.0 * EPS32 * magnitude)
        rescale = tf.sqrt(tf.math.divide_no_nan(sq[0], norm2))
        return tf.cast(tf.where(keep, w * s * rescale, tf.zeros_like(w)), tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "tau": self.tau, "beta": self.beta, "eps": self.eps}
