"""RLW: random loss weights, drawn afresh every step."""

from __future__ import annotations

import random

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import step_seed
from mtl_keras.balancing.base import LossBalancer

DISTRIBUTIONS = ("normal", "uniform")


@keras.saving.register_keras_serializable(package="mtl_keras")
class RandomLossWeighting(LossBalancer):
    """Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
    Learning", TMLR 2022.

    ``w = softmax(eps)``, ``eps ~ N(0, I)`` drawn every step; ``L = sum_i w_i L_i``.

    The draw is stateless, seeded by ``(seed, step)``: every replica draws the same weights, a run
    is reproducible and a resumed run continues the same sequence. ``distribution="uniform"``
    draws ``eps ~ U(0, 1)`` (the paper's other main variant). Weights sum to 1 as in the paper,
    LibMTL and Nash-MTL; ``scale="tasks"`` multiplies them by T to match the summed loss.
    ``seed=None`` picks a random seed once, at construction (it is saved in the config).

    Example:
        >>> b = RandomLossWeighting(seed=0); b.setup(["a", "b", "c"])
        >>> round(float(tf.reduce_sum(b.combine(tf.ones(3), None, 5)[1])), 5)
        1.0
    """

    stochastic = True

    def __init__(
        self, seed: int | None = None, distribution: str = "normal", scale: str = "one", **kwargs
    ):
        super().__init__(**kwargs)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"unknown RLW distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}"
            )
        if scale not in ("one", "tasks"):
            raise ValueError(f"RLW scale must be 'one' or 'tasks', got {scale!r}")
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
        self.distribution, self.scale = distribution, scale

    def combine(self, losses, global_losses, step):
        shape, seed = [self.num_tasks], step_seed(self.seed, step)
        if self.distribution == "normal":
            eps = tf.random.stateless_normal(shape, seed=seed)
        else:
            eps = tf.random.stateless_uniform(shape, seed=seed)
        w = tf.nn.softmax(eps)
        if self.scale == "tasks":
            w = w * float(self.num_tasks)
        return tf.reduce_sum(w * tf.cast(losses, tf.float32)), w

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "seed": self.seed,
            "distribution": self.distribution,
            "scale": self.scale,
        }
