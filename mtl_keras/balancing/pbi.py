"""PBI: penalty-based boundary intersection, the losses pulled onto a preference ray."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64
from mtl_keras.balancing._preference import Preference, preference_vector, stored
from mtl_keras.balancing.base import LossBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class PenaltyBoundaryIntersection(LossBalancer):
    """Penalty-based boundary intersection of Zhang & Li, "MOEA/D: A Multiobjective Evolutionary
    Algorithm Based on Decomposition", IEEE Transactions on Evolutionary Computation 2007.

    ``L = d1 + theta d2`` with ``u = lambda / ||lambda||`` the preference direction,
    ``d1 = (L - z)^T u`` the distance travelled along the ray from the reference point ``z`` and
    ``d2 = ||L - z - d1 u||`` the distance from the ray: progress along the preference, with a
    penalty for leaving it. Its gradient is ``w = u + theta v / ||v||``, ``v = L - z - d1 u``, so
    a task whose loss lies below the ray can get a **negative** weight (PBI raises it towards the
    ray); the trade-off is set by the preference, not by the tasks' gradients.

    Defaults: ``theta = 5`` (the paper's experiments), ``z = 0`` (``reference``; the paper uses the
    best value of each objective found so far, the ideal point: for non-negative losses the origin
    is a lower bound, as in TorchJD's ``PBI``), the preference uniform (``1/T``) unless given as a
    sequence in task order or a mapping by task name, every value positive. ``eps = 1e-12`` under
    the square root of ``d2`` keeps the gradient finite on the ray, where ``d2 = 0`` (TorchJD's);
    the weights are computed in float64, so that float32 rounding of losses on the ray is not
    magnified into a direction.

    The objective returned is the gradient-equivalent ``sum_i w_i L_i``, with ``w`` computed from
    the all-reduced losses and held constant, so the replicas' gradients sum to the gradient of
    the global batch's objective.

    Example:
        >>> b = PenaltyBoundaryIntersection(); b.setup(["a", "b"])
        >>> b.combine(tf.ones(2), tf.constant([1.0, 1.0]), 0)[1].numpy().round(4)  # on the ray
        array([0.7071, 0.7071], dtype=float32)
    """

    def __init__(
        self,
        preference: Preference = None,
        theta: float = 5.0,
        reference: Sequence[float] | None = None,
        eps: float = 1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not float(theta) >= 0:
            raise ValueError(f"PBI theta must be >= 0 (the penalty; 5.0 in MOEA/D), got {theta}")
        self.preference, self.theta, self.eps = stored(preference), float(theta), float(eps)
        self.reference = None if reference is None else [float(v) for v in reference]

    def build_state(self, num_tasks: int) -> None:
        lam = f64(preference_vector(self.preference, self.task_names, "PBI"))
        self.direction = lam / tf.norm(lam)
        if self.reference is not None and len(self.reference) != num_tasks:
            raise ValueError(
                f"PBI reference has {len(self.reference)} values for {num_tasks} tasks "
                f"{list(self.task_names)}; give the ideal point's loss for every task"
            )
        self.ideal = tf.constant(self.reference or [0.0] * num_tasks, tf.float64)

    def combine(self, losses, global_losses, step):
        g = f64(tf.stop_gradient(losses if global_losses is None else global_losses))
        shifted = g - self.ideal
        d1 = tf.tensordot(shifted, self.direction, 1)
        v = shifted - d1 * self.direction
        w = self.direction + self.theta * v / tf.sqrt(tf.reduce_sum(v * v) + self.eps)
        w = tf.cast(w, tf.float32)
        return tf.reduce_sum(w * tf.cast(losses, tf.float32)), w

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "preference": self.preference,
            "theta": self.theta,
            "reference": self.reference,
            "eps": self.eps,
        }
