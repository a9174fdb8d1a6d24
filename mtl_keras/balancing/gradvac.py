"""GradVac: raise the cosine of each task pair to an adaptive, per-pair target."""

from __future__ import annotations

import random

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64, partner_orders, step_seed
from mtl_keras.balancing.base import GradientBalancer, Needs

GROUPS = ("all", "variable")


def vaccinate(gramians: tf.Tensor, targets: tf.Tensor, orders: tf.Tensor, beta: float):
    """GradVac on K groups at once, from their Gramians.

    Args:
        gramians: (K, T, T) Gramian of each parameter group.
        targets: (K, T, T) EMA similarity targets ``phi_hat_ij``.
        orders: (T, T-1) order in which each task visits the others.
        beta: EMA rate of the targets.

    Returns:
        ``(weights, targets)``: (K, T) float32 weights, the group's update being
        ``sum_i w_i g_i``, and the updated (K, T, T) targets.
    """
    g, phi_hat = f64(gramians), f64(targets)
    t = g.shape[-1]
    c = tf.eye(t, batch_shape=[tf.shape(g)[0]], dtype=tf.float64)  # rows: c_i, g_i' = c_i^T J
    norm_j = tf.sqrt(tf.nn.relu(tf.linalg.diag_part(g)))  # (K, T)
    for k in range(t - 1):
        j = orders[:, k]
        partner = tf.one_hot(j, t, dtype=tf.float64)  # (T, T)
        cg = tf.matmul(c, g)  # (K, T, T): row i = c_i^T G
        dot = tf.reduce_sum(cg * partner, -1)
        norm_i = tf.sqrt(tf.nn.relu(tf.reduce_sum(cg * c, -1)))
        nj = tf.gather(norm_j, j, axis=1)
        cos = tf.clip_by_value(tf.math.divide_no_nan(dot, norm_i * nj), -1.0, 1.0)
        goal = tf.reduce_sum(phi_hat * partner, -1)
        sin, sin_goal = tf.sqrt(1.0 - cos**2), tf.sqrt(1.0 - goal**2)
        coef = tf.math.divide_no_nan(norm_i * (goal * sin - cos * sin_goal), nj * sin_goal)
        coef = tf.where(cos < goal, coef, tf.zeros_like(coef))
        c = c + coef[..., None] * partner
        phi_hat = phi_hat + partner * ((1.0 - beta) * goal + beta * cos - goal)[..., None]
    return tf.cast(tf.reduce_sum(c, axis=1), tf.float32), tf.cast(phi_hat, tf.float32)


@keras.saving.register_keras_serializable(package="mtl_keras")
class GradVac(GradientBalancer):
    """Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
    Massively Multilingual Models", ICLR 2021.

    For each task i and each other task j (random order): with ``phi = cos(g_i', g_j)`` and the
    target ``phi_hat_ij``, if ``phi < phi_hat_ij`` then ``g_i' += g_j ||g_i'|| (phi_hat sqrt(1 -
    phi^2) - phi sqrt(1 - phi_hat^2)) / (||g_j|| sqrt(1 - phi_hat^2))``, which raises the cosine
    to exactly ``phi_hat``; in all cases ``phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi``. The
    update is ``sum_i g_i'``. Targets start at 0, so the first step is PCGrad.

    ``group="all"`` (default; LibMTL's group type 0): one group, computed on the Gramian.
    ``group="variable"``: one group per shared variable (LibMTL's type 2 "all matrix"), which
    needs the Jacobian (:meth:`aggregate`) and the layout from :meth:`build_parameter_state`.
    ``beta = 0.5`` (LibMTL's default; the paper's update rule, whose rate it tunes per setting).
    Orders are stateless draws seeded by ``(seed, step)``; targets live in a non-trainable
    variable, identical on every replica.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [-1.0, 1.0]])
        >>> GradVac(seed=0).aggregate(J).numpy()  # first step: same as PCGrad
        array([0.5, 1.5], dtype=float32)
    """

    stochastic = True

    def __init__(self, beta: float = 0.5, group: str = "all", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if group not in GROUPS:
            raise ValueError(f"unknown GradVac group {group!r}; valid: {', '.join(GROUPS)}")
        self.beta, self.group = float(beta), group
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
        self.sizes: tuple[int, ...] | None = None
        if group == "variable":  # per-variable Gramians: the matrix of the shared variables
            self.needs = Needs({"shared": "matrix"})

    def build_state(self, num_tasks: int) -> None:
        if self.group == "all":
            self.targets = self.add_state("targets", (1, num_tasks, num_tasks))

    def build_parameter_state(self, sizes) -> None:
        if self.group == "variable":
            self.sizes = tuple(int(s) for s in sizes)
            self.num_params = sum(self.sizes)
            t = self.num_tasks
            self.targets = self.add_state("targets", (len(self.sizes), t, t))

    def _step(self, gramians, step):
        orders = partner_orders(self.num_tasks, step_seed(self.seed, step))
        w, targets = vaccinate(gramians, self.targets, orders, self.beta)
        self.targets.assign(targets)
        return w

    def weights_from_gramian(self, gramian, losses, step):
        if self.group != "all":
            raise NotImplementedError("GradVac with group='variable' needs the Jacobian")
        return self._step(tf.cast(gramian, tf.float32)[None], step)[0]

    def aggregate(self, jacobian, losses=None, step=None):
        jacobian = tf.convert_to_tensor(jacobian)
        if self.group == "all":
            return super().aggregate(jacobian, losses, step)
        j32, losses, step = self._prepare_parameter_aggregate(
            jacobian, losses, step, "GradVac's per-variable blocks are laid out for"
        )
        blocks = tf.split(j32, list(self.sizes), axis=1)
        gramians = tf.stack([tf.matmul(b, b, transpose_b=True) for b in blocks])
        w = self._step(gramians, step)
        update = tf.concat(
            [tf.linalg.matvec(b, w[k], transpose_a=True) for k, b in enumerate(blocks)], 0
        )
        return tf.cast(update, jacobian.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "beta": self.beta, "group": self.group, "seed": self.seed}
