"""Trimmed mean: the coordinate-wise mean of the task gradients without their extreme values."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from mtl_keras.balancing.base import GradientBalancer, Needs


@keras.saving.register_keras_serializable(package="mtl_keras")
class TrimmedMean(GradientBalancer):
    """Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
    ICML 2018.

    For every parameter, the ``k`` largest and the ``k`` smallest of the T task gradients'
    values are removed and the others averaged: ``d_p = mean(sort(J[:, p])[k : T - k])``. The
    paper's ``beta``-trimmed mean removes the fraction ``beta < 1/2`` at each end,
    ``k = floor(beta T)``; TorchJD's ``trim_number`` gives ``k`` itself (``trim``, which then
    must leave a value: ``2 trim < T``). A robust-aggregation baseline, not an MTL method: the
    update is not a combination of the task gradients, so the method needs the (T, P) matrix
    (the shared path) and gives the task heads their plain sum.

    Default ``beta = 1/3``: with three tasks the coordinate-wise median (``k = 1``), with one or
    two the mean (``k = 0``), and at least a third of the values always kept. O(T log T) per
    parameter.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [2.0, 5.0], [9.0, 1.0]])
        >>> TrimmedMean().aggregate(J).numpy()  # the median of each column
        array([2., 1.], dtype=float32)
    """

    needs = Needs({"shared": "matrix"})

    def __init__(self, beta: float = 1.0 / 3.0, trim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(beta) < 0.5:
            raise ValueError(f"TrimmedMean beta must be in [0, 1/2), got {beta}")
        if trim is not None and int(trim) < 0:
            raise ValueError(f"TrimmedMean trim must be >= 0, got {trim}")
        self.beta = float(beta)
        self.trim = None if trim is None else int(trim)

    def trimmed(self, num_tasks: int) -> int:
        """The number of values removed at each end of every column."""
        if self.trim is None:
            return math.floor(self.beta * num_tasks + 1e-9)  # 1/3 * 3 is 1, not 0.999...
        if 2 * self.trim >= num_tasks:
            raise ValueError(
                f"TrimmedMean with trim={self.trim} removes {2 * self.trim} of {num_tasks} values "
                f"per parameter; give trim < {num_tasks / 2:g} or a fraction beta"
            )
        return self.trim

    def build_state(self, num_tasks: int) -> None:
        self.trimmed(num_tasks)

    def aggregate(self, jacobian, losses=None, step=None):
        jacobian = tf.convert_to_tensor(jacobian)
        j32, losses, step = self._prepare_aggregate(jacobian, losses, step)
        t = j32.shape[0]
        k = self.trimmed(t)
        kept = tf.sort(j32, axis=0)[k : t - k]
        return tf.cast(tf.reduce_mean(kept, axis=0), jacobian.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "beta": self.beta, "trim": self.trim}
