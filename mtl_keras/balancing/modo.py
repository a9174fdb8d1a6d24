"""MoDo: multi-objective gradient with double sampling, on two or three mini-batches per step."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import project_simplex
from mtl_keras.balancing._multi_batch import MultiBatchBalancer
from mtl_keras.balancing.base import Needs


@keras.saving.register_keras_serializable(package="mtl_keras")
class MoDo(MultiBatchBalancer):
    """Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning:
    Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023; JMLR 2024.

    One projected gradient step on MGDA's min-norm problem per training step, with the
    gradient estimated by *double sampling*: ``lambda <- P(lambda - gamma (J_1 J_2^T lambda +
    rho lambda))``, where ``J_1, J_2`` are the Jacobians of two independent mini-batches (so
    ``J_1 J_2^T`` estimates ``J J^T`` without bias) and ``P`` the projection onto the simplex;
    then the model steps along ``d = J_3^T lambda`` on a third mini-batch (``batches=3``, the
    paper's algorithm). With ``batches=2`` the direction is ``d = (J_1 + J_2)^T lambda / 2``, as
    in the authors' two-sample code (which sums the two; halved here so that both forms have the
    scale of one mini-batch's gradient): a third fewer backward passes, at the price of a
    direction that is no longer independent of the weights.

    Defaults (LibMTL): ``gamma = 1e-3``, the weights' step size (small ``gamma``: close to static
    weights, better generalisation in the paper's trade-off; large: closer to MGDA's
    conflict-avoiding direction); ``rho = 0.1``, the l2 regularisation of the weight update (the
    authors' code and LibMTL); ``lambda`` starts at ``1/T`` and is state (saved, equal on
    every replica). LibMTL gives the task-specific variables the mean of their gradients on the
    three mini-batches; here they get those of the direction's mini-batches (see
    ``head_weighting``), as the shared variables do.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 2.0]])  # the same mini-batch three times
        >>> MoDo(gamma=0.1, rho=0.1).aggregate(J).numpy()  # lambda = (0.575, 0.425)
        array([0.575, 0.85 ], dtype=float32)
    """

    def __init__(self, gamma: float = 1e-3, rho: float = 0.1, batches: int = 3, **kwargs):
        super().__init__(**kwargs)
        if not float(gamma) >= 0 or not float(rho) >= 0:
            raise ValueError(f"MoDo needs gamma >= 0 and rho >= 0, got gamma={gamma}, rho={rho}")
        if batches not in (2, 3):
            raise ValueError(
                f"MoDo takes batches=3 (the paper's: weights from two mini-batches, direction "
                f"on a third) or batches=2 (direction on the same two), got {batches!r}"
            )
        self.gamma, self.rho, self.batches = float(gamma), float(rho), int(batches)
        self.needs = Needs({"multi_batch": "cross_gramians"}, batches=self.batches)

    def build_state(self, num_tasks: int) -> None:
        uniform = keras.initializers.Constant(1.0 / num_tasks)
        self.task_weights = self.add_state("task_weights", (num_tasks,), uniform)

    def weights_from_gramians(self, gramians, losses, step):
        g = tf.cast(gramians[0, 1], tf.float32)
        lam = tf.convert_to_tensor(self.task_weights)
        lam = project_simplex(lam - self.gamma * (tf.linalg.matvec(g, lam) + self.rho * lam))
        self.task_weights.assign(lam)
        k, t = gramians.shape[0], g.shape[0]
        if self.batches == 2:
            return tf.stack([lam / 2.0, lam / 2.0])
        return tf.concat([tf.zeros([k - 1, t], tf.float32), lam[None]], 0)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "rho": self.rho,
            "batches": self.batches,
        }
