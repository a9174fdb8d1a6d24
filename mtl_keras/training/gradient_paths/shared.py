"""The shared-variables path: the Jacobian of the shared variables (T backward passes).

Per task, the gradient of its loss share with respect to every trainable variable. The rows of the
shared variables are summed over replicas (the global batch's per-task gradients) and the balancer
sees their Gramian ``G = J J^T`` (weights ``w``, update ``w^T J``) or the (T, P) matrix itself
(update from :meth:`~mtl_keras.balancing.GradientBalancer.aggregate`). The update of the shared
variables is divided by the replica count, since Keras sums the replicas' gradients;
task-specific variables receive ``sum_i c_i g_i`` with ``c`` ones (``head_weighting="sum"``,
Sener & Koltun's Algorithm 2 and LibMTL) or the weights (``"weighted"``, the Nash-MTL code). The
extra term (auxiliary tasks, the network's losses) adds its own gradient, unweighted.
"""

from __future__ import annotations

import tensorflow as tf

from mtl_keras.training import replicas
from mtl_keras.training.gradient_paths.base import (
    GradientPath,
    Record,
    Update,
    combine,
    finite_input,
    poison_unless,
)


class SharedPath(GradientPath):
    name = "shared"

    def __init__(self, network, sharing, balancer, *args, **kwargs):
        super().__init__(network, sharing, balancer, *args, **kwargs)
        shared = {id(v) for v in sharing.shared_variables}
        # the columns of the flat Jacobian, in the order the update concatenates them
        balancer.build_parameter_state(
            [v.shape.num_elements() for v in network.trainable_variables if id(v) in shared]
        )

    def forward(self, x, y, step) -> Record:
        with tf.GradientTape(persistent=True) as tape:
            outputs, _, taps, network_losses = self.run(x)
            losses, global_losses, shares, extra = self.losses(
                x, y, outputs, taps, network_losses, step
            )
        return Record(outputs, losses, global_losses, (tape,), shares, extra)

    def update(self, record: Record, variables, scaling, step) -> Update:
        (tape,) = record.tapes
        shared_ids = {id(v) for v in self.sharing.shared_variables}
        per_task = [scaling.gradients(tape, share, variables) for share in record.shares]
        shared_idx = [j for j, v in enumerate(variables) if id(v) in shared_ids]
        # per shared variable, the (T, ...) stack of the global batch's task gradients
        stacks = replicas.replica_sum(
            [tf.stack([tf.cast(g[j], tf.float32) for g in per_task]) for j in shared_idx]
        )
        flat = [tf.reshape(s, [s.shape[0], -1]) for s in stacks]
        t = len(per_task)
        if self.input == "gramian":
            gramian = tf.add_n([tf.matmul(f, f, transpose_b=True) for f in flat])
            safe, finite = finite_input(gramian, record.global_losses, tf.eye(t))
            weights = tf.cast(
                self.balancer.weights_from_gramian(safe, record.global_losses, step), tf.float32
            )
            shared_updates = poison_unless(finite, [tf.tensordot(weights, s, 1) for s in stacks])
        else:
            matrix = tf.concat(flat, 1)
            gramian = tf.matmul(matrix, matrix, transpose_b=True) if self.statistics else None
            safe, finite = finite_input(matrix, record.global_losses, tf.zeros_like(matrix))
            (update,) = poison_unless(
                finite, [self.balancer.aggregate(safe, record.global_losses, step)]
            )
            pieces = tf.split(update, [s.shape[1:].num_elements() for s in stacks])
            shared_updates = [tf.reshape(p, s.shape[1:]) for p, s in zip(pieces, stacks)]
            weights = tf.cast(self.balancer.head_weights(record.global_losses, step), tf.float32)
        weights = tf.stop_gradient(weights)
        grads = combine(per_task, weights, self.head_coefficients(weights), set(), variables)
        for j, u in zip(shared_idx, shared_updates):
            grads[j] = replicas.share(u)
        if record.extra_share is not None:  # outside the balancer, unweighted
            extra = scaling.gradients(tape, record.extra_share, variables)
            grads = [tf.cast(g, tf.float32) + tf.cast(e, tf.float32) for g, e in zip(grads, extra)]
        return Update([tf.cast(g, v.dtype) for g, v in zip(grads, variables)], weights, gramian)
