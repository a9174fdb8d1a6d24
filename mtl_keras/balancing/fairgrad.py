"""FairGrad: the update of an alpha-fair allocation of progress among the tasks."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64, psd_pinv, symmetrize
from mtl_keras.balancing.base import GradientBalancer

#: step sizes tried by the line search of every Newton step: 1, 1/2, ..., 2^-11
LINE_SEARCH = tuple(0.5**k for k in range(12))
_MAX_LOG_STEP = 30.0  # a step multiplies a weight by at most e^30


def _potential(g, w, alpha):
    """``F(w) = w^T G w / 2 - sum_i phi(w_i)`` with ``phi' = w^(-1/alpha)``, for rows of ``w``."""
    quadratic = 0.5 * tf.reduce_sum(tf.matmul(w, g) * w, axis=-1)
    if alpha == 1.0:
        return quadratic - tf.reduce_sum(tf.math.log(w), axis=-1)
    power = 1.0 - 1.0 / alpha
    return quadratic - tf.reduce_sum(tf.pow(w, power), axis=-1) / power


def fair_weights(gramian: tf.Tensor, alpha: float = 1.0, max_iter: int = 30) -> tf.Tensor:
    """Positive solution of ``G w = w^(-1/alpha)`` (elementwise), float64 (T,).

    It is the minimiser of the strictly convex ``F(w) = w^T G w / 2 - sum_i phi(w_i)`` with
    ``phi(w) = log w`` for ``alpha = 1`` and ``w^(1 - 1/alpha) / (1 - 1/alpha)`` otherwise
    (``grad F = G w - w^(-1/alpha)``). At most ``max_iter`` Newton steps run in a graph loop (no
    host round trip); the loop stops at the first step that leaves ``w`` unchanged, since a step
    depends on ``w`` alone and every later one would leave it unchanged too. A step is
    taken multiplicatively, ``w <- w exp(s dw / w)`` (``dw`` the Jacobi-scaled Newton direction,
    ``|dw / w|`` clipped at 30), so ``w`` stays positive and a weight can move by orders of
    magnitude at once; ``s`` is the longest of :data:`LINE_SEARCH` that decreases ``F`` by the
    Armijo fraction 1e-4 of its first-order prediction (1 once that prediction is below the
    rounding of ``F``; none: no move). ``G`` is divided by its mean diagonal ``c`` first and the
    result scaled back by ``c^(-alpha / (1 + alpha))``. The start solves the equation for
    orthogonal gradients, ``w_i = G_ii^(-alpha / (1 + alpha))``, times the scalar that minimises
    ``F`` along it. On gradients whose norms differ by 1000x the residual reaches rounding within
    about 10 steps for ``alpha <= 5``; a much larger ``alpha`` on such gradients may need a larger
    ``max_iter``. Tasks with a zero gradient have no solution (``0 = w_i^(-1/alpha)``): they are
    solved out and given the mean weight of the others.
    """
    g = symmetrize(f64(gramian))
    t = g.shape[-1]
    diag = tf.linalg.diag_part(g)
    active = diag > 1e-12 * tf.reduce_max(diag)
    on = tf.cast(active, tf.float64)
    n_active = tf.reduce_sum(on)
    scale = tf.math.divide_no_nan(tf.reduce_sum(on * diag), n_active)
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    eye = tf.eye(t, dtype=tf.float64)
    gn = g / scale * (on[:, None] * on[None, :]) + eye * (1.0 - on)[:, None]
    exponent = alpha / (1.0 + alpha)
    u = tf.pow(tf.linalg.diag_part(gn), -exponent)
    quadratic = tf.tensordot(u, tf.linalg.matvec(gn, u), 1)
    w = u * tf.pow(tf.reduce_sum(tf.pow(u, 1.0 - 1.0 / alpha)) / quadratic, exponent)

    steps = tf.constant(LINE_SEARCH, tf.float64)

    def newton_step(i, w, _moved):
        grad = tf.linalg.matvec(gn, w) - tf.pow(w, -1.0 / alpha)
        hess = gn + tf.linalg.diag(tf.pow(w, -1.0 / alpha - 1.0) / alpha)
        d = tf.math.rsqrt(tf.linalg.diag_part(hess))  # Jacobi scaling: unit diagonal
        delta = -d * tf.linalg.matvec(psd_pinv(hess * d[:, None] * d[None, :], 1e-12), d * grad)
        log_step = tf.clip_by_value(delta / w, -_MAX_LOG_STEP, _MAX_LOG_STEP)
        candidates = w[None] * tf.exp(steps[:, None] * log_step[None])  # (S, T), all positive
        current = _potential(gn, w[None], alpha)[0]
        slope = tf.tensordot(grad, w * log_step, 1)  # first-order change of F for step 1
        ok = _potential(gn, candidates, alpha) - current <= 1e-4 * steps * slope
        # within rounding of F the line search cannot tell: take the full Newton step
        ok = ok | ((-slope <= 1e-13 * (tf.abs(current) + 1.0)) & tf.equal(steps, 1.0))
        best = tf.argmax(tf.cast(ok, tf.int32) * tf.range(len(LINE_SEARCH), 0, -1))
        new = tf.where(tf.reduce_any(ok), candidates[best], w)
        return i + 1, new, tf.reduce_any(tf.not_equal(new, w))

    # a step is a function of w alone: once one leaves w unchanged, so would every later one, and
    # stopping there gives exactly the result of all max_iter steps
    _, w, _ = tf.while_loop(
        lambda i, _w, moved: (i < max_iter) & moved,
        newton_step,
        (tf.constant(0), w, tf.constant(True)),
        maximum_iterations=max_iter,
    )
    w = w * tf.pow(scale, -exponent)
    mean_active = tf.math.divide_no_nan(tf.reduce_sum(on * w), n_active)
    w = tf.where(active, w, mean_active)
    return tf.where(n_active > 0, w, tf.ones_like(w))


@keras.saving.register_keras_serializable(package="mtl_keras")
class FairGrad(GradientBalancer):
    """Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.

    The tasks share the update ``d`` as users share a network: each task's utility is its loss
    decrease ``g_i . d`` and ``d`` maximises the alpha-fair total ``sum_i (g_i . d)^(1 - alpha) /
    (1 - alpha)`` (``sum_i log(g_i . d)`` for ``alpha = 1``) over a ball. The solution is
    ``d = sum_i w_i g_i`` with ``w > 0`` solving ``G w = w^(-1/alpha)`` elementwise, and then
    ``g_i . d = w_i^(-1/alpha) > 0``: the update conflicts with no task. ``alpha = 1`` is
    proportional fairness (the equation of Nash-MTL), ``alpha = 2`` minimum potential delay, and
    ``alpha -> infinity`` approaches max-min fairness; a larger ``alpha`` favours the tasks that
    progress least. Under ``J -> cJ`` the update scales as ``c^((1 - alpha) / (1 + alpha))``.

    The equation is solved in the graph, by Newton's method with a line search on a convex
    potential and a fixed budget of ``max_iter = 30`` steps (:func:`fair_weights`); the reference
    code (official, LibMTL) solves it on the host with ``scipy.optimize.least_squares`` (bounds
    ``w >= 0``, start ``1/T``). Where no positive solution exists (e.g. exactly opposite
    gradients), both return a finite point. The reference multiplies the losses by ``w``, which
    also weights the task heads: ``MultiTaskModel(..., head_weighting="weighted")`` does that.
    Default ``alpha = 1.0`` (LibMTL's default); ``alpha`` must be positive.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 2.0]])
        >>> FairGrad(alpha=1.0).aggregate(J).numpy().round(4)  # w = 1/||g_i||: unit steps
        array([1., 1.], dtype=float32)
    """

    def __init__(self, alpha: float = 1.0, max_iter: int = 30, **kwargs):
        super().__init__(**kwargs)
        if not float(alpha) > 0.0:
            raise ValueError(f"FairGrad alpha must be positive, got {alpha}")
        if int(max_iter) < 1:
            raise ValueError(f"FairGrad max_iter must be >= 1, got {max_iter}")
        self.alpha, self.max_iter = float(alpha), int(max_iter)

    def weights_from_gramian(self, gramian, losses, step):
        return tf.cast(fair_weights(gramian, self.alpha, self.max_iter), tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "max_iter": self.max_iter}
