"""The bilevel path: task weights meta-learned by a look-ahead step on a held-out mini-batch.

For balancers with ``needs = Needs({"bilevel": "lookahead"}, batches=2)`` (Auto-Lambda, Liu,
Johns & Davison, TMLR 2022). The step's batch holds two mini-batches of the recipe's batch size
(the run loop batches ``2 * batch_size``), cut into the strided chunks of the multi-batch path
(:func:`~mtl_keras.training.gradient_paths.multi_batch.strided_split`: the same mini-batches on
one device and on replicas whose count divides the batch size): chunk 0 trains, chunk 1 is the
held-out mini-batch, taken from the training data as the official code does, or from a
held-out set of the user's with :func:`with_held_out`.

:meth:`BilevelPath.forward` is the loss path's forward pass on the training chunk. Then
:meth:`BilevelPath.update`:

1. the hypergradient, exactly, by automatic differentiation: with ``w = weights_of(m)`` of the
   balancer's meta-parameters ``m``, an inner tape gives ``g = grad_theta sum_i w_i L_i(train;
   theta)`` and an outer tape records its dependence on ``m``; ``g`` is summed over replicas (the
   global batch's), ``theta' = theta - alpha g`` (``alpha = balancer.virtual_lr``, or the
   optimizer's current learning rate where that is ``"optimizer"``), the primary
   tasks' loss ``L_P`` of the held-out chunk at ``theta'`` comes from
   ``network.stateless_call`` (the new BatchNorm statistics it returns are dropped: the
   variables keep those of the model update), and ``dL_P/dm = (dg/dm)^T (-alpha grad L_P)``,
   with ``grad L_P`` summed over replicas and the (T,) result too (this second-order backward
   pass loss-scaled like the others under mixed float16), so every replica applies the
   same meta step (:meth:`~mtl_keras.balancing.AutoLambda.apply_hypergradient`). For raw
   weights that is ``-alpha g_i . grad L_P(theta')``, the product the paper approximates by
   finite differences (``eps = 0.01 / |d|``). The virtual step uses the task losses only (the
   terms outside the balancer do not depend on the weights).
2. the model update: the gradient of ``sum_i w'_i L_i(train) + extra`` (each replica's share),
   ``w'`` the new weights, from the forward pass's tape; loss-scaled backward passes give true
   gradients, scaled back for the optimizer by the step.

Logged: the training chunk's losses and the new weights; a task whose held-out loss is not
finite after a finite training chunk logs that loss (a non-finite training chunk makes every
held-out loss so), and any non-finite input leaves the meta step at zero and makes the update
NaN (:func:`~.base.poison_unless`), so the step reports its non-finite losses. The outputs the
training metrics see are the training chunk's and the held-out chunk's at ``theta'``, in the
batch's order.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from mtl_keras.training import replicas
from mtl_keras.training.gradient_paths.base import Record, Update, finite_input, poison_unless
from mtl_keras.training.gradient_paths.loss import LossPath
from mtl_keras.training.gradient_paths.multi_batch import strided_merge, strided_split


@dataclasses.dataclass
class BilevelRecord(Record):
    """A :class:`Record` of the training chunk, plus the held-out chunk ``(x, y)``."""

    held_out: tuple | None = None


class BilevelPath(LossPath):
    name = "bilevel"

    def forward(self, x, y, step) -> Record:
        (x_train, x_val), (y_train, y_val) = _halves(x), _halves(y)
        record = super().forward(x_train, y_train, step)
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
        return BilevelRecord(**fields, held_out=(x_train, y_train, x_val, y_val))

    def update(self, record: BilevelRecord, variables, scaling, step) -> Update:
        (tape,) = record.tapes
        grad, val_losses, val_outputs = self.hypergradient(*record.held_out, scaling)
        losses = tf.concat([record.global_losses, val_losses], 0)
        safe, finite = finite_input(grad, losses, tf.zeros_like(grad))
        self.balancer.apply_hypergradient(safe)
        weights = tf.stop_gradient(self.balancer.weights_of(self.balancer.meta_weights))
        targets, coefficients = list(record.shares), list(tf.unstack(weights))
        if record.extra_share is not None:  # outside the balancer, unweighted
            targets.append(record.extra_share)
            coefficients.append(tf.ones([]))
        grads = scaling.gradients(tape, targets, variables, coefficients)
        gramian = self.statistics_gramian(record, variables, scaling)
        # a held-out loss that is not finite after a finite training chunk is reported as is
        trained = tf.reduce_all(tf.math.is_finite(record.global_losses))
        per_task = [
            tf.where(trained & ~tf.math.is_finite(val_losses[i]), val_losses[i], loss)
            for i, loss in enumerate(record.losses.per_task)
        ]
        record.losses = dataclasses.replace(
            record.losses, per_task=per_task, stacked=tf.stack(per_task)
        )
        record.outputs = {
            key: strided_merge([out, tf.cast(val_outputs[key], out.dtype)])
            for key, out in record.outputs.items()
        }
        return Update(poison_unless(finite, grads), weights, gramian)

    def hypergradient(self, x_train, y_train, x_val, y_val, scaling):
        """``(dL_P/dm, L(val; theta'), outputs(val; theta'))``: the all-reduced hypergradient
        of the balancer's meta-parameters ``m``, the held-out chunk's global task losses and its
        outputs after the virtual step."""
        balancer, alpha = self.balancer, self.balancer.virtual_lr
        if alpha == "optimizer":
            alpha = scaling.learning_rate
        theta = [tf.convert_to_tensor(v) for v in self.network.trainable_variables]
        frozen = [tf.convert_to_tensor(v) for v in self.network.non_trainable_variables]
        meta = tf.convert_to_tensor(balancer.meta_weights)
        with tf.GradientTape() as outer:
            outer.watch(meta)
            with tf.GradientTape() as inner:
                inner.watch(theta)
                train, _ = self._task_losses(theta, frozen, x_train, y_train)
                virtual = tf.reduce_sum(balancer.weights_of(meta) * tf.stack(train))
                virtual = replicas.share(virtual)
            g = scaling.gradients(inner, virtual, theta)
        step = replicas.replica_sum([tf.stop_gradient(t) for t in g])
        ahead = [t - alpha * tf.cast(s, t.dtype) for t, s in zip(theta, step)]
        with tf.GradientTape() as val_tape:
            val_tape.watch(ahead)
            val, outputs = self._task_losses(ahead, frozen, x_val, y_val)
            primary = replicas.share(tf.reduce_sum(balancer.primary_mask * tf.stack(val)))
        descent = replicas.replica_sum(scaling.gradients(val_tape, primary, ahead))
        # the second-order pass is loss-scaled too (its float16 activations' gradients would
        # underflow as the first-order ones would), then scaled back
        scale = tf.ones([]) if scaling.scale is None else scaling.scale
        grad = outer.gradient(
            g,
            meta,
            output_gradients=[-alpha * scale * tf.cast(d, t.dtype) for d, t in zip(descent, g)],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        grad = tf.cast(grad, tf.float32) / scale
        val_losses = replicas.global_mean(tf.stack(val))
        return replicas.replica_sum(grad), val_losses, outputs

    def _task_losses(self, trainable, non_trainable, x, y):
        """The task losses and outputs of the network at ``trainable`` (training mode)."""
        outputs, _ = self.network.stateless_call(trainable, non_trainable, x, training=True)
        per_task, _ = self.objective.task_losses(y, outputs)
        return [tf.cast(v, tf.float32) for v in per_task], tf.nest.map_structure(
            tf.stop_gradient, outputs
        )


def with_held_out(train: tf.data.Dataset, held_out: tf.data.Dataset) -> tf.data.Dataset:
    """The batches of the bilevel path with the held-out mini-batches taken from ``held_out``.

    Each batch ``(x, y)`` of ``train`` is paired with the next batch of ``held_out`` (repeated
    as often as needed) and the two are interleaved example by example, the layout the path cuts
    back into its training chunk (``train``'s batch) and held-out chunk. Both datasets are batched
    by the same batch size (divisible by the number of replicas); a smaller last training batch
    takes the first examples of its held-out batch.

    Example:
        >>> data = with_held_out(train.batch(8), validation.shuffle(256).batch(8))  # doctest: +SKIP
        >>> model.fit(data, epochs=10)  # doctest: +SKIP

    Raises:
        ValueError: the two datasets' elements differ in structure.
    """
    try:
        tf.nest.assert_same_structure(train.element_spec, held_out.element_spec)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "with_held_out: the training and held-out batches must have the same structure "
            f"(the same (x, y) with the same tasks), got {train.element_spec} and "
            f"{held_out.element_spec}"
        ) from error

    message = (
        "with_held_out: a held-out batch is smaller than its training batch; batch both "
        "datasets by the same batch size"
    )

    def merge(a, b):
        first, other = tf.nest.flatten(a)[0], tf.nest.flatten(b)[0]
        if first.shape[0] is not None and other.shape[0] is not None:
            if other.shape[0] < first.shape[0]:
                raise ValueError(message)
            checks = []
        else:
            checks = [
                tf.debugging.assert_greater_equal(tf.shape(other)[0], tf.shape(first)[0], message)
            ]
        n = tf.shape(first)[0]
        with tf.control_dependencies(checks):
            return tf.nest.map_structure(lambda s, t: strided_merge([s, t[:n]]), a, b)

    return tf.data.Dataset.zip((train, held_out.repeat())).map(merge)


def _halves(nest) -> tuple:
    """The two strided chunks (examples 0, 2, 4, ... and 1, 3, 5, ...) of every tensor."""
    first = tf.nest.flatten(nest)[0]
    n = first.shape[0]
    message = (
        "the bilevel path takes a training and a held-out mini-batch per step, so each "
        f"replica's batch must hold an even number of examples (got {n}); batch the data by "
        "2 * batch_size (a recipe's data is batched so)"
    )
    if n is not None and n % 2:
        raise ValueError(message)
    if n is None:
        tf.debugging.assert_equal(tf.shape(first)[0] % 2, 0, message)
    parts = [strided_split(t, 2) for t in tf.nest.flatten(nest)]
    return tuple(tf.nest.pack_sequence_as(nest, [p[a] for p in parts]) for a in range(2))
