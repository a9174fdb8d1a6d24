"""The shared-representation path: per-task gradients of the representation ``z`` (MGDA-UB).

Sener & Koltun ("Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, Sec. 3.3)
balance the gradients of the shared representation instead of the shared variables: they cost
backward passes through the heads only. The network is split at ``z`` (the tensors marked
:class:`~mtl_keras.architectures.SharedRepresentation`): an outer tape records the encoder
``x -> z``, an inner one the heads ``(x, z) -> outputs``. A tape differentiates everything it
recorded between a target and the input, whatever the sources asked for, so the per-task passes
on the inner tape never go through the encoder. Per task, one backward pass gives ``dL_i/dz`` and
the task's gradients of the head variables; the balancer maps the Gramian of the ``dL_i/dz``
(summed over replicas: the global Gramian of a batch split across replicas is the sum of the
local ones) to weights ``w``, or rewrites ``dL_i/dz`` itself (GradDrop); one backward pass of the
encoder takes ``J_z^T sum_i w_i dL_i/dz``. The extra term (auxiliary tasks, the network's
losses) is added unweighted, the encoder's own losses on the outer tape.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.training import replicas
from mtl_keras.training.gradient_paths.base import (
    GradientPath,
    Record,
    Update,
    combine,
    finite_input,
    flat_rows,
    network_losses,
    poison_unless,
)
from mtl_keras.training.subgraph import Subgraph


class RepresentationPath(GradientPath):
    name = "representation"

    def __init__(self, network, sharing, *args, **kwargs):
        super().__init__(network, sharing, *args, **kwargs)
        if self.taps:
            raise ValueError(
                "objective terms that read the network's tensors run on the loss or shared "
                "gradient paths; use gradient_source='shared' or a loss-level balancer"
            )
        reps = [layer.output for layer in sharing.representation_layers]
        self._encoder = keras.Model(network.input, reps, name=f"{network.name}_encoder")
        # a graph function, not a Model: a Model whose inputs are inner tensors of the network
        # adds nodes to the network's layers, and the network could no longer be saved
        self._heads = Subgraph([*tf.nest.flatten(network.input), *reps], network.output)
        encoder = {id(w) for w in self._encoder.trainable_weights}
        self._head_weights = [w for w in network.trainable_weights if id(w) not in encoder]

    def forward(self, x, y, step) -> Record:
        encoder_extra = None
        with tf.GradientTape() as encoder_tape:
            with network_losses(self.network, self._encoder.trainable_weights) as encoder_losses:
                rep = list(tf.nest.flatten(self._encoder(x, training=True)))
            own = [tf.cast(v, tf.float32) for v in encoder_losses]
            if own:  # the encoder's own losses (add_loss, regularisers)
                encoder_extra = replicas.share(tf.add_n(own))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(rep)
            with network_losses(self.network, self._head_weights) as head_losses:
                outputs = self._heads([*tf.nest.flatten(x), *rep], training=True)
            losses, global_losses, shares, extra = self.losses(
                x, y, outputs, {}, list(head_losses), step
            )
        tapes = (tape, encoder_tape)
        return Record(
            outputs, losses, global_losses, tapes, shares, extra, rep, None, None, encoder_extra
        )

    def update(self, record: Record, variables, scaling, step) -> Update:
        tape, encoder_tape = record.tapes
        rep, shares = record.representation, record.shares
        up_ids = {id(v) for v in self.sharing.representation_variables}
        up = [v for v in variables if id(v) in up_ids]
        down = [v for v in variables if id(v) not in up_ids]
        t = len(shares)
        if self.input == "representation_gradients":
            # GradDrop: the balancer rewrites dL/dz itself; heads get sum_i g_i
            task_grads = [
                tf.stack([scaling.gradients(tape, shares[i], [r])[0] for i in range(t)])
                for r in rep
            ]
            finite = replicas.all_finite_everywhere([record.global_losses, *task_grads])
            safe = [tf.where(finite, g, tf.zeros_like(g)) for g in task_grads]
            rep_grad = self.balancer.representation_gradients(
                safe, rep, record.global_losses, step, replica_sum=replicas.replica_sum
            )
            rep_grad = poison_unless(finite, [tf.cast(g, tf.float32) for g in rep_grad])
            down_grads = scaling.gradients(tape, list(shares), down)
            weights = tf.ones([t], tf.float32)
            gramian = None
            if self.statistics:
                z = tf.concat([tf.reshape(tf.cast(g, tf.float32), [t, -1]) for g in task_grads], 1)
                gramian = replicas.replica_sum(tf.matmul(z, z, transpose_b=True))
        else:
            gz, per_task = [], []
            for i in range(t):
                g = scaling.gradients(tape, shares[i], [*rep, *down])
                gz.append(g[: len(rep)])
                per_task.append(g[len(rep) :])
            z = flat_rows(gz)
            gramian = replicas.replica_sum(tf.matmul(z, z, transpose_b=True))
            safe, finite = finite_input(gramian, record.global_losses, tf.eye(t))
            weights = self.balancer.weights_from_gramian(safe, record.global_losses, step)
            weights = tf.stop_gradient(tf.cast(weights, tf.float32))
            shared_ids = {id(v) for v in self.sharing.shared_variables}
            head = self.head_coefficients(weights)
            down_grads = combine(per_task, weights, head, shared_ids, down)
            rep_grad = poison_unless(
                finite,
                [
                    tf.add_n([weights[i] * tf.cast(g[k], tf.float32) for i, g in enumerate(gz)])
                    for k in range(len(rep))
                ],
            )
        if record.extra_share is not None:
            g = scaling.gradients(tape, record.extra_share, [*rep, *down])
            rep_grad = [a + tf.cast(b, tf.float32) for a, b in zip(rep_grad, g[: len(rep)])]
            down_grads = [
                tf.cast(a, tf.float32) + tf.cast(b, tf.float32)
                for a, b in zip(down_grads, g[len(rep) :])
            ]
        targets, out_grads = list(rep), list(rep_grad)
        if record.encoder_extra is not None:
            targets.append(record.encoder_extra)
            out_grads.append(None)
        up_grads = scaling.gradients(encoder_tape, targets, up, out_grads)
        by_id = {id(v): g for v, g in zip(down, down_grads)}
        by_id.update({id(v): g for v, g in zip(up, up_grads)})
        return Update([tf.cast(by_id[id(v)], v.dtype) for v in variables], weights, gramian)
