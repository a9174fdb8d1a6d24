"""CAGrad: the best worst-task improvement within a ball around the average gradient."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import (
    MAX_ENUMERATE,
    f64,
    project_simplex,
    subset_masks,
    subset_pinvs,
)
from mtl_keras.balancing.base import GradientBalancer

RESCALES = (0, 1, 2)


def cagrad_dual(
    gramian: tf.Tensor, c: float, iterations: int = 1000
) -> tuple[tf.Tensor, tf.Tensor]:
    """``argmin_{w in simplex} w^T G b + r sqrt(w^T G w)``, ``b = 1/T``, ``r = c ||g0||``.

    Returns ``(w, valid)``: float64 (T,) weights and whether a minimiser with ``g_w != 0`` was
    found. For T <= ``MAX_ENUMERATE`` the solution is exact: on a support S the stationarity
    conditions ``(G b)_S + r (G w)_S / ||g_w|| = nu 1`` and ``1^T w = 1`` give, with
    ``H = G_SS^+``, ``a = 1^T H 1``, ``beta = 1^T H (Gb)_S``, ``gamma = (Gb)_S^T H (Gb)_S`` and
    ``D = beta^2 - a (gamma - r^2)``: ``w_S = H (nu 1 - (Gb)_S) / sqrt(D)`` with
    ``nu = (beta + sqrt(D)) / a``. Every support is solved at once and the candidate with the
    smallest KKT violation kept. Beyond that, accelerated projected gradient on the simplex
    with ``iterations`` steps on a slightly smoothed norm.
    """
    g = f64(gramian)
    t = g.shape[-1]
    scale = tf.linalg.trace(g) / t
    g = g / tf.where(scale > 0, scale, tf.ones_like(scale))
    b = tf.fill([t], tf.constant(1.0 / t, tf.float64))
    gb = tf.linalg.matvec(g, b)
    r = c * tf.sqrt(tf.nn.relu(tf.tensordot(b, gb, 1)))
    if t > MAX_ENUMERATE:
        return _dual_iterative(g, gb, r, iterations)
    masks = subset_masks(t, include_empty=False)
    m = tf.constant(masks, tf.float64)  # (S, T)
    h = subset_pinvs(g, masks)
    h1 = tf.linalg.matvec(h, m)  # H 1_S
    hc = tf.linalg.matvec(h, gb[None] * m)  # H (Gb)_S
    a = tf.reduce_sum(h1 * m, -1)
    beta = tf.reduce_sum(h1 * gb[None], -1)
    gamma = tf.reduce_sum(hc * gb[None], -1)
    disc = beta**2 - a * (gamma - r**2)
    root = tf.sqrt(tf.nn.relu(disc))
    nu = tf.math.divide_no_nan(beta + root, a)
    w = tf.math.divide_no_nan(nu[:, None] * h1 - hc, root[:, None])  # (S, T)
    gw = tf.linalg.matvec(g, w)  # G w per candidate
    s = tf.sqrt(tf.nn.relu(tf.reduce_sum(w * gw, -1)))
    grad = gb[None] + r * tf.math.divide_no_nan(gw, s[:, None])
    nu_hat = tf.reduce_sum(grad * m, -1) / tf.reduce_sum(m, -1)
    violation = tf.reduce_max(
        tf.stack(
            [
                tf.nn.relu(-w),
                tf.abs(grad - nu_hat[:, None]) * m,
                tf.nn.relu(nu_hat[:, None] - grad) * (1.0 - m),
            ],
            -1,
        ),
        axis=[-2, -1],
    )
    violation += tf.abs(tf.reduce_sum(w, -1) - 1.0)
    ok = (disc > 0) & (a > 0) & (s > 1e-12)
    violation = tf.where(
        ok, violation, tf.fill(tf.shape(violation), tf.constant(1e300, tf.float64))
    )
    best = tf.argmin(violation, output_type=tf.int32)
    valid = violation[best] < 1e-6
    return tf.nn.relu(w[best]), valid


def _dual_iterative(g, gb, r, iterations):
    t = g.shape[-1]
    delta = 1e-6 * tf.tensordot(gb, gb, 1) + 1e-30  # smoothing of the norm
    lipschitz = tf.reduce_max(tf.linalg.eigvalsh(g)) * (1.0 + r / tf.sqrt(delta))
    step = 1.0 / lipschitz

    def grad_fn(w):
        gw = tf.linalg.matvec(g, w)
        return gb + r * gw / tf.sqrt(tf.tensordot(w, gw, 1) + delta)

    def body(k, w, y, tk):
        w_new = project_simplex(y - step * grad_fn(y))
        t_new = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * tk * tk))
        return k + 1, w_new, w_new + ((tk - 1.0) / t_new) * (w_new - w), t_new

    w0 = tf.fill([t], tf.constant(1.0 / t, tf.float64))
    one = tf.constant(1.0, tf.float64)
    _, w, _, _ = tf.while_loop(lambda k, *_: k < iterations, body, (0, w0, w0, one))
    s = tf.sqrt(tf.nn.relu(tf.tensordot(w, tf.linalg.matvec(g, w), 1)))
    return w, s > 1e-9


@keras.saving.register_keras_serializable(package="mtl_keras")
class CAGrad(GradientBalancer):
    """Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021.

    ``max_d min_i <g_i, d>`` s.t. ``||d - g0|| <= c ||g0||`` with ``g0`` the mean gradient; via
    its dual over the simplex, ``d = g0 + (c ||g0|| / ||g_w||) g_w`` (Algorithm 1).

    Everything is a function of the Gramian: the update is ``sum_i w'_i g_i`` with
    ``w' = 1/T + (c ||g0|| / ||g_w||) w``. The dual is solved in the graph, exactly for up to
    ``MAX_ENUMERATE`` tasks (:func:`cagrad_dual`), where the official code calls SciPy's SLSQP on
    the host every step. If the minimiser has ``g_w = 0`` (the hull of the gradients contains a
    point orthogonal to the ball) the update is ``g0``, the official code's limit.

    Defaults: ``c = 0.4`` (the authors' NYUv2/CityScapes runs, Nash-MTL, FAMO; LibMTL uses 0.5);
    ``rescale = 0``: no final scaling, the paper's update (the official runs use ``rescale=1``,
    dividing by ``1 + c^2``; ``rescale=2`` divides by ``1 + c``); ``scale="mean"``: the update is
    around the *mean* gradient as in the paper and LibMTL (the official code and Nash-MTL multiply
    by T "to match the sum loss": ``scale="sum"``). With ``c = 0`` the update is the mean.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 1.0]])
        >>> CAGrad(c=0.4).aggregate(J).numpy().round(4)  # symmetric: (1 + c) g0
        array([0.7, 0.7], dtype=float32)
    """

    def __init__(self, c: float = 0.4, rescale: int = 0, scale: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if rescale not in RESCALES:
            raise ValueError(f"CAGrad rescale must be 0, 1 or 2, got {rescale!r}")
        if scale not in ("mean", "sum"):
            raise ValueError(f"CAGrad scale must be 'mean' or 'sum', got {scale!r}")
        if c < 0:
            raise ValueError(f"CAGrad c is the radius of the ball and must be >= 0, got {c}")
        self.c, self.rescale, self.scale = float(c), int(rescale), scale

    def weights_from_gramian(self, gramian, losses, step):
        g = f64(gramian)
        t = g.shape[-1]
        b = tf.fill([t], tf.constant(1.0 / t, tf.float64))
        if self.c > 0:
            w, valid = cagrad_dual(g, self.c)
            g0_norm = tf.sqrt(tf.nn.relu(tf.tensordot(b, tf.linalg.matvec(g, b), 1)))
            gw_norm = tf.sqrt(tf.nn.relu(tf.tensordot(w, tf.linalg.matvec(g, w), 1)))
            lam = tf.math.divide_no_nan(self.c * g0_norm, gw_norm)
            weights = b + tf.where(valid, lam, tf.zeros_like(lam)) * w
        else:
            weights = b
        weights /= {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        if self.scale == "sum":
            weights *= float(t)
        return tf.cast(weights, tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "c": self.c, "rescale": self.rescale, "scale": self.scale}
