"""The multi-batch path: per-task gradients of the shared variables on several mini-batches.

For balancers whose ``needs.batches = k >= 2`` (SDMGrad, MoDo): the step's batch holds ``k``
mini-batches of the recipe's batch size (:func:`~mtl_keras.training.building.load_data` batches
``k * batch_size`` examples; a user of ``fit`` does the same). Mini-batch ``a`` is the *strided*
chunk of examples ``a, a + k, a + 2k, ...``, each run through the network on its own (its own
BatchNorm statistics, its own losses) under one persistent tape. Per mini-batch and task, the
gradient of the loss share; the shared variables' rows are summed over replicas, and the
balancer maps the cross Gramians ``G[a, b] = J_a J_b^T`` and the (k, T) losses to (k, T)
weights ``W`` (:meth:`~mtl_keras.balancing.GradientBalancer.weights_from_gramians`). The shared
variables get ``sum_a W[a]^T J_a``, divided by the replica count as on the shared path;
task-specific variables ``sum_a sum_i c_{a,i} g_{a,i}``, with ``c = W`` (``head_weighting=
"weighted"``) or, for ``"sum"``, ``c_{a,i} = m_a``, the share ``m_a = |W[a]| / |W|`` (sums of
absolute values) of mini-batch ``a`` in the update: the direction's mini-batches, averaged (the
last one alone for SDMGrad and the three-batch MoDo). The extra term (auxiliary tasks, the
network's losses) of each mini-batch is added unweighted, times the same ``m_a``.

Why strided chunks: a distribution strategy cuts the global batch of ``N = kB`` examples into
``R`` contiguous slices of ``n = N / R``, replica ``r`` holding examples ``rn .. rn + n - 1``.
When ``k`` divides ``n`` (that is, when ``R`` divides ``B``, which the recipe checks), the local
example ``i`` of replica ``r`` is the global example ``rn + i`` and ``rn + i = i (mod k)``; so
replica ``r``'s chunk ``a`` (local ``i = a mod k``) is exactly the set of global examples of
chunk ``a`` in its slice, and the replicas' chunks ``a`` together are the one-device chunk ``a``.
Contiguous chunks would instead give each replica a different mini-batch.

The logged losses (and every logged term) are the means over the k mini-batches; the outputs,
put back in the batch's order, are those the training metrics see.
"""

from __future__ import annotations

import dataclasses

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
from mtl_keras.training.objective import Losses


def strided_split(t: tf.Tensor, k: int) -> list:
    """``[t[a::k] for a in range(k)]`` along the batch axis, as one reshape."""
    t = tf.convert_to_tensor(t)
    rest = t.shape[1:]
    shape = [-1, k, *rest] if rest.is_fully_defined() else tf.concat([[-1, k], tf.shape(t)[1:]], 0)
    return tf.unstack(tf.reshape(t, shape), num=k, axis=1)


def _chunks(nest, k: int) -> list:
    """The k strided chunks of every tensor of ``nest``, as k nests."""
    parts = [strided_split(t, k) for t in tf.nest.flatten(nest)]
    return [tf.nest.pack_sequence_as(nest, [p[a] for p in parts]) for a in range(k)]


def strided_merge(chunks: list) -> tf.Tensor:
    """The inverse of :func:`strided_split`: the chunks' examples back in the batch's order."""
    stacked = tf.stack(chunks, axis=1)
    rest = stacked.shape[2:]
    shape = [-1, *rest] if rest.is_fully_defined() else tf.concat([[-1], tf.shape(stacked)[2:]], 0)
    return tf.reshape(stacked, shape)


@dataclasses.dataclass
class MultiBatchRecord(Record):
    """A :class:`Record` whose ``losses`` are the means over the mini-batches, plus each one's.

    Attributes:
        chunk_losses: (k, T) the global losses of each mini-batch, without gradient.
        chunk_shares: per mini-batch, this replica's share of each task loss (on the tape).
        chunk_extras: per mini-batch, the share of the extra term (None if there is none).
    """

    chunk_losses: tf.Tensor | None = None
    chunk_shares: list | None = None
    chunk_extras: list | None = None


class MultiBatchPath(GradientPath):
    name = "multi_batch"

    def __init__(self, network, sharing, balancer, *args, **kwargs):
        super().__init__(network, sharing, balancer, *args, **kwargs)
        self.batches = balancer.needs.batches
        shared = {id(v) for v in sharing.shared_variables}
        balancer.build_parameter_state(
            [v.shape.num_elements() for v in network.trainable_variables if id(v) in shared]
        )

    def _check_divisible(self, x) -> None:
        first = tf.nest.flatten(x)[0]
        n, k = first.shape[0], self.batches
        message = (
            f"balancer {type(self.balancer).__name__} takes {k} mini-batches per step, so each "
            f"replica's batch must hold a multiple of {k} examples (got {n}); batch the data by "
            f"{k} * batch_size (a recipe's data is batched so)"
        )
        if n is not None and n % k:
            raise ValueError(message)
        if n is None:
            tf.debugging.assert_equal(tf.shape(first)[0] % k, 0, message)

    def forward(self, x, y, step) -> Record:
        self._check_divisible(x)
        k = self.batches
        xs, ys = _chunks(x, k), _chunks(y, k)
        chunks = []
        with tf.GradientTape(persistent=True) as tape:
            for xa, ya in zip(xs, ys):
                outputs, _, taps, network_losses = self.run(xa)
                chunks.append((outputs, *self.losses(xa, ya, outputs, taps, network_losses, step)))
        outputs = {key: strided_merge([c[0][key] for c in chunks]) for key in chunks[0][0]}
        chunk_losses = tf.stack([c[2] for c in chunks])
        extras = [c[4] for c in chunks]
        return MultiBatchRecord(
            outputs,
            _mean_losses([c[1] for c in chunks]),
            tf.reduce_mean(chunk_losses, 0),
            (tape,),
            [],
            None,
            chunk_losses=chunk_losses,
            chunk_shares=[c[3] for c in chunks],
            chunk_extras=None if extras[0] is None else extras,
        )

    def update(self, record: MultiBatchRecord, variables, scaling, step) -> Update:
        (tape,) = record.tapes
        shared_ids = {id(v) for v in self.sharing.shared_variables}
        shared_idx = [j for j, v in enumerate(variables) if id(v) in shared_ids]
        per_chunk = [
            [scaling.gradients(tape, share, variables) for share in shares]
            for shares in record.chunk_shares
        ]
        # per mini-batch and shared variable, the (T, ...) stack of the global task gradients
        stacks = replicas.replica_sum(
            [
                [tf.stack([tf.cast(g[j], tf.float32) for g in per_task]) for j in shared_idx]
                for per_task in per_chunk
            ]
        )
        k, t = len(per_chunk), len(per_chunk[0])
        gramians = tf.zeros([k * t, k * t])
        for v in range(len(shared_idx)):  # sum of per-variable blocks: no (kT, P) matrix
            rows = tf.concat([tf.reshape(stacks[a][v], [t, -1]) for a in range(k)], 0)
            gramians += tf.matmul(rows, rows, transpose_b=True)
        gramians = tf.transpose(tf.reshape(gramians, [k, t, k, t]), [0, 2, 1, 3])
        fallback = tf.tile(tf.eye(t)[None, None], [k, k, 1, 1])
        safe, finite = finite_input(gramians, record.chunk_losses, fallback)
        weights = self.balancer.weights_from_gramians(safe, record.chunk_losses, step)
        weights = tf.stop_gradient(tf.cast(weights, tf.float32))
        shared_updates = poison_unless(
            finite,
            [
                tf.add_n([tf.tensordot(weights[a], stacks[a][v], 1) for a in range(k)])
                for v in range(len(shared_idx))
            ],
        )
        share = _batch_shares(weights)
        heads = weights if self.head_weighting == "weighted" else share[:, None] * tf.ones([k, t])
        grads = [
            tf.add_n(parts)
            for parts in zip(
                *[combine(per_chunk[a], heads[a], heads[a], set(), variables) for a in range(k)]
            )
        ]
        for j, u in zip(shared_idx, shared_updates):
            grads[j] = replicas.share(u)
        if record.chunk_extras is not None:  # outside the balancer, unweighted
            extra = scaling.gradients(
                tape, record.chunk_extras, variables, [share[a] for a in range(k)]
            )
            grads = [tf.cast(g, tf.float32) + tf.cast(e, tf.float32) for g, e in zip(grads, extra)]
        statistics = tf.reduce_mean(tf.stack([gramians[a, a] for a in range(k)]), 0)
        return Update(
            [tf.cast(g, v.dtype) for g, v in zip(grads, variables)],
            tf.reduce_sum(weights, 0),
            statistics,
        )


def _batch_shares(weights: tf.Tensor) -> tf.Tensor:
    """(k,) each mini-batch's share of the update, ``|W[a]| / |W|`` (uniform if ``W = 0``)."""
    mass = tf.reduce_sum(tf.abs(weights), axis=1)
    total = tf.reduce_sum(mass)
    uniform = tf.ones_like(mass) / tf.cast(tf.size(mass), tf.float32)
    return tf.where(total > 0, mass / tf.where(total > 0, total, 1.0), uniform)


def _mean_losses(parts: list[Losses]) -> Losses:
    """The mini-batches' :class:`Losses` averaged (what the step logs)."""

    def mean(values):
        return tf.add_n(list(values)) / len(parts)

    per_task = [mean(p.per_task[i] for p in parts) for i in range(len(parts[0].per_task))]
    extra = None if parts[0].extra is None else mean(p.extra for p in parts)
    return Losses(
        per_task,
        tf.stack(per_task),
        {key: mean(p.terms[key] for p in parts) for key in parts[0].terms},
        extra,
        {key: mean(p.logs[key] for p in parts) for key in parts[0].logs},
    )
