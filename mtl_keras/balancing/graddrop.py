"""GradDrop: keep, element by element, only the gradient sign most tasks agree on."""

from __future__ import annotations

import random
from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import step_seed
from mtl_keras.balancing.base import GradientBalancer, Needs


@keras.saving.register_keras_serializable(package="mtl_keras")
class GradDrop(GradientBalancer):
    """Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign
    Dropout", NeurIPS 2020.

    Positive sign purity ``P = (1 + sum_i g_i / sum_i |g_i|) / 2`` per element; ``U ~ U(0, 1)``;
    task i keeps its element where ``(P > U and g_i > 0) or (P < U and g_i < 0)``;
    ``g_i <- g_i (l_i + (1 - l_i) M_i)`` and the update is ``sum_i g_i``.

    Two ways to use it:

    * on the shared **representation** (the paper, LibMTL; the preferred source): through
      :meth:`representation_gradients`, which multiplies the per-sample gradients by the sign of
      the representation and sums over the batch before computing ``P`` (the paper's batch
      rule), so one mask per feature element is shared by the whole batch. The batch sums are
      all-reduced, so with the same seed a batch split over replicas gets exactly the masks of
      the whole batch on one device.
    * on a (T, P) matrix of **shared-variable** gradients with :meth:`aggregate` (the
      CAGrad/FAMO repositories' variant, which also averages instead of summing).

    Defaults: ``leak = 0`` for every task (the paper's main setting; a sequence gives one per
    task). ``U`` is a stateless draw seeded by ``(seed, step)``.

    Example:
        >>> d = GradDrop(seed=0).aggregate(tf.constant([[1.0, 2.0], [3.0, -2.0]]))
        >>> float(d[0])  # both positive: kept; element 1 keeps 2 or -2 at random
        4.0
    """

    needs = Needs({"representation": "representation_gradients", "shared": "matrix"})
    stochastic = True

    def __init__(self, leak: float | Sequence[float] = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.leak = [float(v) for v in leak] if isinstance(leak, Sequence) else float(leak)
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)

    def build_state(self, num_tasks: int) -> None:
        self._leaks(num_tasks)  # refuses leaks of another length or out of [0, 1]

    def _leaks(self, num_tasks: int) -> list[float]:
        leak = self.leak if isinstance(self.leak, list) else [self.leak] * num_tasks
        if len(leak) != num_tasks or not all(0.0 <= v <= 1.0 for v in leak):
            raise ValueError(
                f"GradDrop leak must be one value in [0, 1] or one per task ({num_tasks}), "
                f"got {self.leak}"
            )
        return leak

    def _keep(self, signed, seed):
        """Multipliers ``l + (1 - l) M`` (T, ...) from sign-corrected gradients (T, ...)."""
        purity = 0.5 * (
            1.0 + tf.math.divide_no_nan(tf.reduce_sum(signed, 0), tf.reduce_sum(tf.abs(signed), 0))
        )
        u = tf.random.stateless_uniform(tf.shape(purity), seed=seed)
        mask = ((purity > u) & (signed > 0)) | ((purity < u) & (signed < 0))
        leak = tf.constant(self._leaks(signed.shape[0]), tf.float32)
        leak = tf.reshape(leak, [-1] + [1] * (signed.shape.rank - 1))
        return leak + (1.0 - leak) * tf.cast(mask, tf.float32)

    def aggregate(self, jacobian, losses=None, step=None):
        jacobian = tf.convert_to_tensor(jacobian)
        j32, losses, step = self._prepare_aggregate(jacobian, losses, step)
        update = tf.reduce_sum(j32 * self._keep(j32, step_seed(self.seed, step)), axis=0)
        return tf.cast(update, jacobian.dtype)

    def representation_gradients(self, task_grads, representations, losses, step, replica_sum=None):
        replica_sum = replica_sum or (lambda x: x)
        out = []
        for k, (grads, rep) in enumerate(zip(task_grads, representations, strict=True)):
            g = tf.cast(grads, tf.float32)  # (T, B, ...)
            signed = replica_sum(tf.reduce_sum(g * tf.sign(tf.cast(rep, tf.float32))[None], 1))
            keep = self._keep(signed, step_seed(self.seed, step, salt=k + 1))  # (T, ...)
            out.append(tf.cast(tf.reduce_sum(g * keep[:, None], 0), rep.dtype))
        return out

    def get_config(self) -> dict:
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
