"""What every gradient path shares: the step's record, the update, the forward pass.

A gradient path is where a training step's gradients come from and what the balancer sees of
them. It is chosen once, when the model is built, from the balancer's :class:`Needs` and the
network's sharing. A step asks it for two things, in Keras's order:

* :meth:`GradientPath.forward`: the forward pass and the objective's losses, under the tapes the
  path needs (a :class:`Record`);
* :meth:`GradientPath.update`: the gradient of every trainable variable (an :class:`Update`),
  with the balancer run on what it declared it works on.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import tensorflow as tf

from mtl_keras.training import replicas
from mtl_keras.training.objective import Losses, Objective
from mtl_keras.training.subgraph import Subgraph


@contextlib.contextmanager
def network_losses(network: keras.Model, regularized=None):
    """Collects the ``add_loss`` values of the forward passes run in the block, in this thread.

    Yields the list they are appended to; when the block ends, the weight regularisers' terms of
    ``regularized`` (default: every trainable weight of ``network``) are appended too, as
    ``network.losses`` would give them. Keras keeps a layer's ``add_loss`` values in one list
    per layer, shared by every thread, and ``MirroredStrategy`` runs each replica's step in a
    thread of its own: read from ``network.losses``, a replica can see the other replica's
    losses as well as its own (the sluice networks' orthogonality penalty came out doubled on
    two replicas, and the weights left one device's after two steps). Inside a
    ``keras.StatelessScope(collect_losses=True)``, which is per thread, each replica collects
    only its own. The scope also holds back variable updates (batch-norm statistics, random
    states); they are applied when the block ends, as the layers would have applied them.
    """
    with keras.StatelessScope(collect_losses=True) as scope:
        yield scope.losses
    for variable in network.variables:
        value = scope.get_current_value(variable)
        if value is not None:
            variable.assign(value)
    weights = network.trainable_weights if regularized is None else regularized
    scope.losses.extend(w.regularizer(w) for w in weights if w.regularizer is not None)


@dataclasses.dataclass
class Record:
    """One forward pass: its outputs, losses and the tapes that recorded them.

    Attributes:
        outputs: the network's raw outputs by key.
        losses: the objective's :class:`~mtl_keras.training.objective.Losses`.
        global_losses: (T,) the global batch's task losses, without gradient.
        tapes: the path's gradient tapes.
        shares: this replica's share of each task loss and of the extra term (``None`` if none),
            recorded on the tapes.
        representation: the shared representation's tensors, when the path reads them.
        objective: the loss path's combined objective; weights: its task weights.
        encoder_extra: the representation path's share of the encoder's own losses.
    """

    outputs: dict
    losses: Losses
    global_losses: tf.Tensor
    tapes: tuple
    shares: list
    extra_share: tf.Tensor | None
    representation: list | None = None
    objective: tf.Tensor | None = None
    weights: tf.Tensor | None = None
    encoder_extra: tf.Tensor | None = None


@dataclasses.dataclass
class Update:
    """The gradients of one step.

    Attributes:
        gradients: one per trainable variable, in their order (None: no gradient).
        weights: (T,) the task weights the balancer used (logged).
        gramian: (T, T) Gramian of the per-task gradients the balancer saw, for the gradient
            statistics (None when not computed).
        scaled: the gradients are of the loss-scaled objective (else true gradients).
    """

    gradients: list
    weights: tf.Tensor
    gramian: tf.Tensor | None = None
    scaled: bool = False


class GradientPath:
    """Base of the gradient paths.

    Args:
        network: the functional network.
        sharing: its :class:`~mtl_keras.architectures.base.Sharing`.
        balancer: the set-up balancer.
        objective: the model's :class:`~mtl_keras.training.objective.Objective`.
        taps: ``{name: tensor of the network}`` the objective's terms read.
        statistics: compute the Gramian of per-task gradients for the gradient statistics.
        head_weighting: ``"sum"`` or ``"weighted"``: the coefficients of task-specific
            variables' per-task gradients (ones, or the balancer's weights).
    """

    name = ""

    def __init__(
        self, network, sharing, balancer, objective: Objective, taps, statistics, head_weighting
    ):
        self.network, self.sharing, self.balancer = network, sharing, balancer
        self.objective, self.taps, self.statistics = objective, dict(taps), statistics
        self.head_weighting = head_weighting
        self.input = balancer.needs.paths.get(self.name)
        self._forward = self._make_forward(self.reads_representation())

    def reads_representation(self) -> bool:
        """Whether the forward pass also returns the shared representation."""
        return False

    def _make_forward(self, representation: bool):
        if not representation and not self.taps:
            return None  # the network itself
        outputs = {"outputs": self.network.output, "taps": self.taps}
        if representation:
            outputs["rep"] = [layer.output for layer in self.sharing.representation_layers]
        return Subgraph(self.network.input, outputs)

    def run(self, x, training: bool = True):
        """``(outputs, representation or None, taps, network losses)`` of one forward pass."""
        with network_losses(self.network) as losses:
            if self._forward is None:
                outputs, rep, taps = self.network(x, training=training), None, {}
            else:
                out = self._forward(x, training=training)
                outputs, rep, taps = out["outputs"], out.get("rep"), out["taps"]
        return outputs, rep, taps, list(losses)

    def losses(self, x, y, outputs, taps, network_losses, step):
        """The objective's losses, the global ones, and this replica's shares (in the tapes)."""
        losses = self.objective(x, y, outputs, taps, network_losses, step)
        shares = [replicas.share(v) for v in losses.per_task]
        extra = None if losses.extra is None else replicas.share(losses.extra)
        return losses, replicas.global_mean(losses.stacked), shares, extra

    def forward(self, x, y, step) -> Record:
        raise NotImplementedError

    def update(self, record: Record, variables, scaling, step) -> Update:
        raise NotImplementedError

    def head_coefficients(self, weights):
        """The coefficients of task-specific variables' per-task gradients."""
        return weights if self.head_weighting == "weighted" else tf.ones_like(weights)


def combine(per_task, weights, head_weights, shared_ids, variables) -> list:
    """Per variable: ``sum_i w_i g_i`` if shared, ``sum_i c_i g_i`` if task-specific."""
    out = []
    for j, v in enumerate(variables):
        coef = weights if id(v) in shared_ids else head_weights
        out.append(tf.add_n([coef[i] * tf.cast(g[j], tf.float32) for i, g in enumerate(per_task)]))
    return out


def flat_rows(per_task_grads) -> tf.Tensor:
    """(T, P): row ``i`` the concatenation of task ``i``'s flattened gradients."""
    return tf.stack(
        [
            tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in gs], 0)
            for gs in per_task_grads
        ]
    )


def finite_input(value, global_losses, fallback):
    """``(value, finite)``: the balancer's input, or ``fallback`` when it or the losses are not
    finite, so that no balancer fails on NaN (an eigendecomposition, a QP) before the step's
    non-finite losses can be reported. Every replica agrees: both inputs are all-reduced."""
    finite = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(global_losses)),
        tf.reduce_all(tf.math.is_finite(value)),
    )
    return tf.where(finite, value, fallback), finite


def poison_unless(finite, tensors) -> list:
    """``tensors`` (an update) made NaN when ``finite`` is False: a step on non-finite inputs
    is not made to look finite by a balancer that ran on the fallback (its logged weights are
    the fallback's; the non-finite losses are what the logs report)."""
    nan = tf.where(finite, 0.0, float("nan"))
    return [t + tf.cast(nan, t.dtype) for t in tensors]


def gradient_statistics_gramian(tape, shares, sources, scaling, summed_rows: bool):
    """Gramian of per-task gradients of ``sources`` for the statistics (T backward passes).

    ``summed_rows``: sum the gradient rows over replicas first (shared variables: the global
    batch's gradients); otherwise sum the local Gramians (a representation, whose tensors are
    this replica's batch).
    """
    z = flat_rows([scaling.gradients(tape, loss, sources) for loss in shares])
    if summed_rows:
        z = replicas.replica_sum(z)
        return tf.matmul(z, z, transpose_b=True)
    return replicas.replica_sum(tf.matmul(z, z, transpose_b=True))
