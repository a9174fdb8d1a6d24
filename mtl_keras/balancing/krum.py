"""Krum: the gradient closest to its neighbours, robust to a number of arbitrary rows."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import f64
from mtl_keras.balancing.base import GradientBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class Krum(GradientBalancer):
    """Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent", NeurIPS 2017.

    Each row ``g_i`` is scored by the sum of its squared distances to its ``T - f - 2`` nearest
    other rows, ``s(i) = sum_{i -> j} ||g_i - g_j||^2`` (``f = n_byzantine``, the number of rows
    that may be arbitrary); Krum returns the row with the smallest score and Multi-Krum the mean
    of the ``n_selected`` best. It tolerates ``f`` arbitrary rows when ``T > 2f + 2``. A
    robust-aggregation baseline, not an MTL method: it follows one (or a few) task gradients.

    Weights from the Gramian (``||g_i - g_j||^2 = G_ii + G_jj - 2 G_ij``), as TorchJD computes
    it; TorchJD sums the distances themselves, not their squares as the paper does:
    ``squared=False`` reproduces it. Rows with equal scores share their selection slots equally
    (so the update does not depend on the order of the tasks); with ``T <= f + 2`` no neighbour
    enters the score, every row ties and the update is the mean. Defaults: ``n_byzantine = 0``,
    ``n_selected = 1`` (Krum itself; TorchJD has no default for ``n_byzantine``).

    Example:
        >>> J = tf.constant([[1.0, 0.0], [1.2, 0.0], [0.9, 0.1], [-5.0, 4.0]])
        >>> Krum().aggregate(J).numpy()  # the row closest to its two nearest neighbours
        array([1., 0.], dtype=float32)
    """

    def __init__(self, n_byzantine: int = 0, n_selected: int = 1, squared: bool = True, **kwargs):
        super().__init__(**kwargs)
        if int(n_byzantine) < 0:
            raise ValueError(f"Krum n_byzantine must be >= 0, got {n_byzantine}")
        if int(n_selected) < 1:
            raise ValueError(f"Krum n_selected must be >= 1, got {n_selected}")
        self.n_byzantine, self.n_selected = int(n_byzantine), int(n_selected)
        self.squared = bool(squared)

    def build_state(self, num_tasks: int) -> None:
        if num_tasks < self.n_selected:
            raise ValueError(
                f"Krum selects n_selected={self.n_selected} rows but got {num_tasks} tasks"
            )

    def weights_from_gramian(self, gramian, losses, step):
        g = f64(gramian)
        t = g.shape[-1]
        diag = tf.linalg.diag_part(g)
        distances = tf.nn.relu(diag[:, None] + diag[None, :] - 2.0 * g)
        if not self.squared:
            distances = tf.sqrt(distances)
        neighbours = max(t - self.n_byzantine - 2, 0)
        others = tf.linalg.set_diag(distances, tf.fill([t], tf.float64.max))  # self goes last
        scores = tf.reduce_sum(tf.sort(others, axis=1)[:, :neighbours], axis=1)
        below = tf.reduce_sum(tf.cast(scores[None, :] < scores[:, None], tf.float64), axis=1)
        ties = tf.reduce_sum(tf.cast(scores[None, :] == scores[:, None], tf.float64), axis=1)
        slots = tf.clip_by_value(self.n_selected - below, 0.0, ties) / ties
        return tf.cast(slots / self.n_selected, tf.float32)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "n_byzantine": self.n_byzantine,
            "n_selected": self.n_selected,
            "squared": self.squared,
        }
