"""Replica arithmetic: every division by the replica count and every all-reduce of a step.

Keras 3's optimizer *sums* the gradients of the replicas of a ``tf.distribute`` strategy. A
replica's loss is therefore its :func:`share` of the global batch's loss (divided by the replica
count), so that the replicas' gradients sum to the global batch's. Quantities a balancer reads
(task losses, per-task gradients of shared variables, Gramians of representation gradients) are
reduced over replicas before it runs, so every replica computes the same weights and the same
state. Outside a strategy (one replica) every function here is the identity.
"""

from __future__ import annotations

import tensorflow as tf


def count() -> int:
    """The number of replicas in sync (1 outside a strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def _context():
    ctx = tf.distribute.get_replica_context()
    return None if ctx is None or ctx.num_replicas_in_sync == 1 else ctx


def share(x):
    """A replica's share of a global-batch quantity: ``x / replicas``."""
    return x / count()


def replica_sum(x):
    """Sum over replicas (a tensor or a nest of tensors)."""
    ctx = _context()
    return x if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def replica_mean(x):
    """Mean over replicas (e.g. the pixel counts a loss is normalised by)."""
    ctx = _context()
    return x if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.MEAN, x)


def global_mean(losses: tf.Tensor) -> tf.Tensor:
    """The global batch's losses, without gradient: the mean of the replicas' losses."""
    return tf.stop_gradient(replica_sum(share(losses)))


def all_finite_everywhere(tensors) -> tf.Tensor:
    """True when every element of ``tensors`` is finite on every replica."""
    local = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32))) for t in tensors]
    )
    return tf.equal(replica_sum(1.0 - tf.cast(local, tf.float32)), 0.0)
