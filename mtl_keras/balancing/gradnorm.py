"""GradNorm: learned task weights that equalise the training rates of the tasks."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import adam_update
from mtl_keras.balancing.base import GradientBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class GradNorm(GradientBalancer):
    """Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
    Multitask Networks", ICML 2018.

    Learned weights ``w``; ``L_grad = sum_i | w_i ||g_i|| - Gbar r_i^alpha |`` with
    ``Gbar = mean_j w_j ||g_j||``, ``r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))`` and the target
    ``Gbar r_i^alpha`` held constant (the paper). The update is ``sum_i w_i g_i``; then ``w`` takes
    one step along ``dL_grad/dw_i = sign(w_i ||g_i|| - target_i) ||g_i||`` and is renormalised to
    sum to T (clamped at 0 first, so weights stay non-negative).

    Everything comes from the Gramian (``||g_i|| = sqrt(G_ii)``), so the (T, P) Jacobian is never
    formed. Defaults: ``alpha = 1.5`` (the paper's NYUv2 value); ``L_i(0)`` is the loss at the
    first step (the paper's definition; LibMTL uses the mean loss of epoch 0 and equal weights
    during it). ``g_i`` are the gradients of all shared variables or of the shared representation
    (the paper uses the last shared layer, LibMTL all shared parameters). The weights are stepped
    by a separate in-graph Adam with ``lr = 0.025`` (the learning rate Nash-MTL/FAMO use for
    method parameters; LibMTL steps them with the model's optimizer), kept in non-trainable
    variables with ``L(0)`` and the Adam moments.

    Example:
        >>> b = GradNorm(); b.setup(["a", "b"])
        >>> b.weights_from_gramian(tf.eye(2), tf.ones(2), 0).numpy()  # first step: all ones
        array([1., 1.], dtype=float32)
    """

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.lr = float(alpha), float(lr)

    def build_state(self, num_tasks: int) -> None:
        self.task_weights = self.add_state("task_weights", (num_tasks,), "ones")
        self.initial_losses = self.add_state("initial_losses", (num_tasks,), "ones")
        self.adam_m = self.add_state("adam_m", (num_tasks,))
        self.adam_v = self.add_state("adam_v", (num_tasks,))
        self.adam_count = self.add_state("adam_count", (), dtype="int64")

    def weights_from_gramian(self, gramian, losses, step):
        norms = tf.sqrt(tf.nn.relu(tf.linalg.diag_part(tf.cast(gramian, tf.float32))))
        losses = tf.cast(losses, tf.float32)
        initial = tf.where(self.adam_count == 0, losses, self.initial_losses)
        self.initial_losses.assign(initial)
        w = tf.convert_to_tensor(self.task_weights)
        ratio = tf.math.divide_no_nan(losses, initial)
        relative = tf.math.divide_no_nan(ratio, tf.reduce_mean(ratio))
        weighted_norms = w * norms
        target = tf.reduce_mean(weighted_norms) * tf.pow(relative, self.alpha)
        grad = tf.sign(weighted_norms - target) * norms
        adam_update(self.task_weights, grad, self.adam_m, self.adam_v, self.adam_count, self.lr)
        new = tf.nn.relu(tf.convert_to_tensor(self.task_weights))
        total = tf.reduce_sum(new)
        t = float(self.num_tasks)
        self.task_weights.assign(tf.where(total > 0, new * t / total, tf.ones_like(new)))
        return w

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "lr": self.lr}
