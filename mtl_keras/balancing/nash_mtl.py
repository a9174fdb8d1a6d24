"""Nash-MTL: the Nash bargaining solution of the tasks' update preferences."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64, symmetrize
from mtl_keras.balancing.base import GradientBalancer

NORMALIZATIONS = ("none", "frobenius")


def nash_weights(gramian: tf.Tensor, max_iter: int = 20) -> tf.Tensor:
    """Positive solution of ``G a = 1 / a`` (float64, (T,)).

    It is the unique minimiser of the strictly convex, self-concordant
    ``F(a) = a^T G a / 2 - sum_i log a_i`` (``grad F = G a - 1/a``), found by damped Newton steps
    ``a += Delta / (1 + lambda)`` (``lambda`` the Newton decrement; full steps once
    ``lambda < 1/4``), which never leave ``a > 0``. ``max_iter`` steps are unrolled in the graph:
    no data-dependent control flow, so no device-to-host synchronisation; converged steps are
    no-ops. ``G`` is divided by ``trace(G)/T`` first and the result scaled back; the start is
    ``a_i ∝ 1/sqrt(G_ii)`` with ``a^T G a = T`` (both hold at the solution for orthogonal
    gradients). Tasks with a zero gradient have no solution (``0 = 1/a_i``): they are solved out
    and given the mean weight of the others.
    """
    g = symmetrize(f64(gramian))
    t = g.shape[-1]
    diag = tf.linalg.diag_part(g)
    active = diag > 1e-12 * tf.reduce_max(diag)
    n_active = tf.reduce_sum(tf.cast(active, tf.float64))
    scale = tf.math.divide_no_nan(tf.reduce_sum(tf.where(active, diag, 0.0)), n_active)
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    both = tf.cast(active[:, None] & active[None, :], tf.float64)
    eye = tf.eye(t, dtype=tf.float64)
    gn = g / scale * both + eye * (1.0 - tf.cast(active, tf.float64))[:, None]
    u = tf.math.rsqrt(tf.linalg.diag_part(gn))
    a0 = u * tf.sqrt(t / tf.tensordot(u, tf.linalg.matvec(gn, u), 1))

    a = a0
    for _ in range(max_iter):  # unrolled: no data-dependent control flow, no host sync
        grad = tf.linalg.matvec(gn, a) - 1.0 / a
        hess = gn + tf.linalg.diag(1.0 / (a * a))
        delta = -tf.linalg.cholesky_solve(tf.linalg.cholesky(hess), grad[:, None])[:, 0]
        dec = tf.sqrt(tf.nn.relu(-tf.tensordot(grad, delta, 1)))  # Newton decrement
        a = a + tf.where(dec < 0.25, tf.ones_like(dec), 1.0 / (1.0 + dec)) * delta
    a = a / tf.sqrt(scale)
    mean_active = tf.math.divide_no_nan(tf.reduce_sum(tf.where(active, a, 0.0)), n_active)
    a = tf.where(active, a, mean_active)
    return tf.where(n_active > 0, a, tf.ones_like(a))


@keras.saving.register_keras_serializable(package="mtl_keras")
class NashMTL(GradientBalancer):
    """Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.

    Weights ``a > 0`` with ``G a = 1 / a`` (the Nash bargaining solution, Theorem 5.1); update
    ``sum_i a_i g_i``. At the solution ``d . g_i = 1 / a_i > 0`` (no task conflicts with the
    update) and ``||d||^2 = T``.

    Deviations from the official code, which solves a sequence of CCCP-linearised problems with
    cvxpy/ECOS on the host (20 iterations, keeping the previous weights when ECOS fails): here
    the equation itself is solved in the graph by damped Newton (:func:`nash_weights`, exact to
    float64 rounding within a few steps). ``normalization="none"`` solves the paper's equation
    with ``G`` itself; ``"frobenius"`` solves it with ``G / ||G||_F`` and does not scale back,
    as the official code does (its update then grows with the gradients:
    ``a_official = a sqrt(||G||_F)``). The official code also clips the shared gradient norm at
    ``max_norm = 1``: use the optimizer's ``clipnorm``. ``update_every = 1`` recomputes the
    weights every step (the official default; larger values reuse the stored weights in
    between). Tasks with a zero gradient get the mean weight of the others; when no solution
    exists (e.g. exactly opposite gradients) the budget of ``max_iter = 20`` Newton steps
    returns a finite point on the way.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 2.0]])
        >>> NashMTL().aggregate(J).numpy().round(4)  # a = 1/||g_i||: unit steps on each axis
        array([1., 1.], dtype=float32)
    """

    def __init__(
        self,
        normalization: str = "none",
        update_every: int = 1,
        max_iter: int = 20,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown Nash-MTL normalization {normalization!r}; valid: "
                f"{', '.join(NORMALIZATIONS)}"
            )
        if int(update_every) < 1:
            raise ValueError(f"Nash-MTL update_every must be >= 1, got {update_every}")
        self.normalization, self.update_every = normalization, int(update_every)
        self.max_iter = int(max_iter)

    def build_state(self, num_tasks: int) -> None:
        if self.update_every > 1:
            self.previous = self.add_state("previous_weights", (num_tasks,), "ones")

    def _solve(self, gramian):
        g = f64(gramian)
        if self.normalization == "frobenius":
            norm = tf.norm(g)
            g = g / tf.where(norm > 0, norm, tf.ones_like(norm))
        return tf.cast(nash_weights(g, self.max_iter), tf.float32)

    def weights_from_gramian(self, gramian, losses, step):
        if self.update_every == 1:
            return self._solve(gramian)
        due = tf.equal(tf.math.floormod(tf.cast(step, tf.int64), self.update_every), 0)
        w = tf.cond(due, lambda: self._solve(gramian), lambda: tf.convert_to_tensor(self.previous))
        self.previous.assign(w)
        return w

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "normalization": self.normalization,
            "update_every": self.update_every,
            "max_iter": self.max_iter,
        }
