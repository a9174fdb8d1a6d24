"""What the multi-batch methods share: their declaration and their use outside the trainer."""

from __future__ import annotations

import tensorflow as tf

from mtl_keras.balancing.base import GradientBalancer, Needs


class MultiBatchBalancer(GradientBalancer):
    """A gradient method on the cross Gramians of ``k = needs.batches`` independent mini-batches.

    In the trainer (the ``"multi_batch"`` gradient path) it receives ``G[a, b] = J_a J_b^T`` for
    every pair of the step's mini-batches and returns (k, T) weights, the update being
    ``sum_a W[a]^T J_a`` (:meth:`weights_from_gramians`). On its own, :meth:`aggregate_batches`
    takes the k Jacobians; :meth:`aggregate` and :meth:`weights_from_gramian`, given one Jacobian,
    use it for every mini-batch: the method's deterministic form.
    """

    needs = Needs({"multi_batch": "cross_gramians"}, batches=3)

    def weights_from_gramian(self, gramian, losses, step):
        """(T,) weights when every mini-batch has the Jacobian of ``gramian``."""
        k = self.needs.batches
        g = tf.cast(gramian, tf.float32)
        losses = tf.tile(tf.cast(losses, tf.float32)[None], [k, 1])
        w = self.weights_from_gramians(tf.tile(g[None, None], [k, k, 1, 1]), losses, step)
        return tf.reduce_sum(w, axis=0)

    def aggregate_batches(
        self, jacobians: tf.Tensor, losses: tf.Tensor | None = None, step: tf.Tensor | None = None
    ) -> tf.Tensor:
        """The (P,) update ``sum_a W[a]^T J_a`` from (k, T, P) per-mini-batch Jacobians.

        Args:
            jacobians: ``J_a`` of each of the ``needs.batches`` mini-batches, stacked.
            losses: (k, T) task losses of each mini-batch (default ones).
            step: the optimizer's iteration counter (default 0).
        """
        jacobians = tf.convert_to_tensor(jacobians)
        k = self.needs.batches
        if jacobians.shape.rank != 3 or jacobians.shape[0] != k:
            raise ValueError(
                f"{type(self).__name__} takes {k} mini-batches: a ({k}, T, P) stack of their "
                f"Jacobians, got shape {jacobians.shape}"
            )
        rows = [self._prepare_aggregate(jacobians[a], None, step) for a in range(k)]
        j32, step = tf.stack([r[0] for r in rows]), rows[0][2]
        if losses is None:
            losses = tf.ones(j32.shape[:2], tf.float32)
        gramians = tf.einsum("atp,bsp->abts", j32, j32)
        w = self.weights_from_gramians(gramians, tf.cast(losses, tf.float32), step)
        return tf.cast(tf.einsum("at,atp->p", w, j32), jacobians.dtype)
