"""ASTMT's adversarial training on loss gradients (Maninis, Radosavovic, Kokkinos, "Attentive
Single-Tasking of Multiple Tasks", CVPR 2019, Sec. 3.3).

A discriminator learns to tell, per pixel, which task produced the gradient of its loss with
respect to the shared decoder's output features (the tensors marked
:class:`~mtl_keras.architectures.astmt.TaskFeatures`); behind a gradient reversal layer, the same
loss drives the network to make the tasks' gradients indistinguishable. One training step:

1. the forward pass (inside the trainer's tape) returns the predictions and each task's features
   ``F_t``;
2. per task, an inner tape differentiates the task loss with respect to ``F_t`` through the
   network's tail ``F_t -> prediction`` (ASTMT: the task's 1x1 classifier and the bilinear
   upsampling, recomputed from ``F_t``; cheap). The outer tape records this backward pass, so
   ``g_t = dL_t / dF_t`` is itself differentiable (second order);
3. the discriminator classifies the per-pixel L2-normalised ``g_t``; its loss ``L_D`` (masked to
   the pixels with a gradient) joins the objective as ``balanced + adversarial_weight * L_D``;
4. one backward pass of that objective and one optimizer update of the network's and the
   discriminator's variables. The reversal layer turns the single objective into the minimax:
   the discriminator descends on ``L_D``, the network (through ``g_t``) ascends on ``lambda L_D``.

Defaults follow ASTMT's code: ``adversarial_weight=0.01`` (its ``dscr_w``: ASTMT minimises
``0.99 L_task + 0.01 L_D``; here the balanced objective keeps its scale), a depth-2 1x1
discriminator, and Ganin & Lempitsky's ramp of the reversal strength
``lambda(p) = 2 / (1 + exp(-10 p)) - 1`` over training progress ``p`` (per epoch in ASTMT, per
step here) when ``reversal_steps`` is given. ASTMT also trains the discriminator with a 10x
learning rate under SGD; here one optimizer updates everything (under Adam, the default of the
recipes, a gradient scale does not change the step size anyway).

**Balancers.** Loss-level balancers only: the adversarial term is added outside the balancer, like
the auxiliary losses of :class:`~mtl_keras.training.MultiTaskModel`. A gradient-level balancer
would need the second-order adversarial term inside each of its per-task backward passes.

**Distribution** as the base trainer: the term is divided by the replica count, and the
discriminator's pixel counts are averaged over replicas, so replicas' gradients sum to those of the
global batch. **Mixed precision**: ASTMT's tail and the discriminator compute in float32, so the
inner gradient is of the unscaled float32 loss, without float16 underflow; the outer backward pass
is loss-scaled as the base trainer's.

**Implementation**: the subclass reuses the base trainer's step (loss scaling, skipped non-finite
steps, auxiliary losses, gradient statistics) through three of its methods: ``_forward_pass``
(also returns the features), ``extra_loss`` (adds the adversarial term inside the tape) and
``_update_trackers`` (logs the discriminator). What one step shares between them is kept per
thread, because ``MirroredStrategy`` runs the replicas' steps in concurrent threads.

**Cost**: the per-task tails are run and differentiated once more, and the outer backward pass
also goes through the inner one; on CPU, a step takes about 1.2-1.4x the CPU time of the plain
step (the tiny test model, resnet10 width 8, two tasks, 32x32, batch 2; and the
``astmt_synthetic`` recipe, six tasks, 64x64, batch 8: 1.3x), and tracing the step about 1.7x.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.architectures.astmt import (
    build_task_discriminator,
    discriminator_terms,
    task_features,
)
from mtl_keras.training.model import MultiTaskModel, _replica_mean


def reversal_schedule(step, total_steps) -> tf.Tensor:
    """Ganin & Lempitsky's reversal strength ``2 / (1 + exp(-10 p)) - 1``, ``p = (step + 1) /
    total_steps`` clipped to 1 (ASTMT applies it per epoch: ``p = (epoch + 1) / epochs``).

    Example:
        >>> round(float(reversal_schedule(99, 100)), 4)
        0.9999
    """
    p = tf.minimum((tf.cast(step, tf.float32) + 1.0) / float(total_steps), 1.0)
    return 2.0 / (1.0 + tf.exp(-10.0 * p)) - 1.0


@tf.custom_gradient
def _scale_gradient(x, scale):
    """Identity forward; the gradient times ``scale`` backward (none for ``scale``)."""

    def grad(dy):
        return dy * tf.cast(scale, dy.dtype), tf.zeros_like(scale)

    return tf.identity(x), grad


class _StepState:
    """What one replica's training step shares between the base trainer's hooks."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.features = None
        self.terms = None


class _Helpers:
    """Models sharing the network's weights, kept out of Keras's tracking (saved once)."""

    def __init__(self, forward: keras.Model, tails: dict[str, keras.Model]):
        self.forward, self.tails = forward, tails


class AdversarialMultiTaskModel(MultiTaskModel):
    """:class:`MultiTaskModel` plus ASTMT's adversarial task discriminator on loss gradients.

    Args:
        network: a network with one :class:`~mtl_keras.architectures.astmt.TaskFeatures` marker
            per task (``architectures.build("astmt", ...)``).
        tasks: as :class:`MultiTaskModel`.
        balancer: a loss-level balancer (instance or name).
        discriminator: ``gradients (B, h, w, C) -> logits (B, h, w, T)``, behind its own gradient
            reversal; default :func:`~mtl_keras.architectures.astmt.build_task_discriminator`
            (depth 2, 1x1 kernels) with ``discriminator_kwargs``. A tracked attribute: saved and
            restored with the trainer's weights, not exported with the network.
        discriminator_kwargs: arguments of the default discriminator.
        adversarial_weight: weight of the discriminator's loss in the objective (ASTMT: 0.01).
        reversal_steps: ramp the reversal strength with :func:`reversal_schedule` over this many
            steps (the run's total, as ASTMT); None keeps it constant (the discriminator's own
            reversal scale, 1 by default).
        **kwargs: the other arguments of :class:`MultiTaskModel`.

    Logs ``discriminator_loss`` and ``discriminator_accuracy`` (per-pixel, mean over tasks; chance
    is ``1 / T``) in training; the logged ``loss`` includes ``adversarial_weight * L_D``.

    Example:
        >>> network = architectures.build("astmt", ["semseg", "depth"])
        >>> model = AdversarialMultiTaskModel(network, ["semseg", "depth"], reversal_steps=1000)
        >>> model.compile(optimizer="adam")
    """

    def __init__(
        self,
        network: keras.Model,
        tasks=None,
        balancer: str | balancing.Balancer = "fixed",
        *,
        discriminator: keras.Model | None = None,
        discriminator_kwargs: Mapping | None = None,
        adversarial_weight: float = 0.01,
        reversal_steps: int | None = None,
        **kwargs,
    ):
        super().__init__(network, tasks, balancer, **kwargs)
        if "loss" not in self.balancer.needs.paths:
            raise ValueError(
                "the adversarial discriminator (ASTMT) works with loss-level balancers only; "
                f"{balancing.method_name(self.balancer)!r} balances gradients, which would "
                "need the second-order adversarial term inside each of its per-task backward "
                "passes. Use a loss-level balancer (e.g. 'fixed', 'uncertainty', 'dwa') or "
                "adversarial_weight=0"
            )
        if adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        if reversal_steps is not None and reversal_steps < 1:
            raise ValueError(f"reversal_steps must be a positive step count, got {reversal_steps}")
        features = task_features(network)
        missing = [t for t in self.task_names if t not in features]
        if missing:
            raise ValueError(
                f"network {network.name!r} has no TaskFeatures marker for task(s) {missing} "
                f"(markers: {sorted(features)}); the adversarial discriminator needs ASTMT's "
                "per-task decoder features: build the network with architecture='astmt'"
            )
        channels = {features[t].shape[-1] for t in self.task_names}
        if len(channels) != 1:
            raise ValueError(
                f"the tasks' TaskFeatures have different channel counts {sorted(channels)}; one "
                "discriminator classifies them all"
            )
        self.adversarial_weight = float(adversarial_weight)
        self.reversal_steps = reversal_steps
        if discriminator is None:
            discriminator = build_task_discriminator(
                channels.pop(), len(self.task_names), **dict(discriminator_kwargs or {})
            )
        elif discriminator_kwargs:
            raise ValueError("discriminator_kwargs apply to the default discriminator only")
        self.discriminator = discriminator  # tracked: in the trainer's weights and optimizer

        outputs = {"outputs": network.output, "features": {t: features[t] for t in self.task_names}}
        if self._forward is not None:  # the base trainer also reads the shared representation
            outputs["rep"] = [layer.output for layer in self._sharing.representation_layers]
        tails = {
            t: keras.Model([network.input, features[t]], network.output[t], name=f"{t}_tail")
            for t in self.task_names
        }
        stateful = sorted(
            {layer.name for tail in tails.values() for layer in tail.layers}
            & {layer.name for layer in network.layers if layer.non_trainable_weights}
        )
        if stateful:
            raise ValueError(
                f"layers {stateful} between the TaskFeatures and the predictions keep state "
                "(e.g. batch-norm statistics); the adversarial step recomputes that tail and "
                "needs it stateless"
            )
        self._helpers = _Helpers(keras.Model(network.input, outputs), tails)
        self._local = threading.local()  # per replica thread (MirroredStrategy traces in threads)
        self._discriminator_loss_tracker = keras.metrics.Mean(name="discriminator_loss")
        self._discriminator_accuracy_tracker = keras.metrics.Mean(name="discriminator_accuracy")

    # ------------------------------------------------------------------ the adversarial term
    def reversal_strength(self) -> tf.Tensor:
        """The current multiplier of the reversed gradient (1 without a schedule)."""
        if self.reversal_steps is None:
            return tf.constant(1.0)
        return reversal_schedule(self.optimizer.iterations, self.reversal_steps)

    def task_gradients(self, x, y, features, training: bool = True) -> dict[str, tf.Tensor]:
        """``{task: dL_task / dF_task}`` (float32), differentiable: recorded by any active tape.

        Args:
            x: the images; y: the labels by task; features: ``{task: F_task}`` of the forward pass.
        """
        grads = {}
        for t in self.task_names:
            f = features[t]
            with tf.GradientTape() as inner:
                inner.watch(f)
                prediction = self._helpers.tails[t]([x, f], training=training)
                loss = self._loss(t, y[t], prediction)
            g = inner.gradient(loss, f)
            grads[t] = tf.zeros_like(f, tf.float32) if g is None else tf.cast(g, tf.float32)
        return grads

    def adversarial_terms(
        self, x, y, features: Mapping | None = None, training: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The discriminator's loss (differentiable, second order) and accuracy on one batch.

        Args:
            x: the images; y: the labels by task.
            features: ``{task: F_task}`` of a forward pass already run (the training step's);
                None runs one (in mode ``training``).
        """
        if features is None:
            features = self._helpers.forward(x, training=training)["features"]
        grads = self.task_gradients(x, y, features, training)
        if self.reversal_steps is not None:
            strength = tf.stop_gradient(self.reversal_strength())
            grads = {t: _scale_gradient(g, strength) for t, g in grads.items()}
        return discriminator_terms(
            self.discriminator, grads, self.task_names, count_mean=_replica_mean
        )

    # ------------------------------------------------------------------ base trainer hooks
    def _state(self) -> _StepState | None:
        return getattr(self._local, "state", None)

    def train_step(self, data):
        self._local.state = _StepState(data[0], data[1])
        try:
            return super().train_step(data)
        finally:
            self._local.state = None

    def _forward_pass(self, x, training):
        state = self._state()
        if state is None:
            return super()._forward_pass(x, training)
        out = self._helpers.forward(x, training=training)
        state.features = out["features"]
        return out["outputs"], out.get("rep")

    def extra_loss(self, terms, network_losses):
        """The base trainer's extra terms plus ``adversarial_weight * L_D`` (in a train step)."""
        extra = super().extra_loss(terms, network_losses)
        state = self._state()
        if state is None or state.features is None:
            return extra
        loss, accuracy = self.adversarial_terms(state.x, state.y, state.features)
        state.terms = (loss, accuracy)
        adversarial = self.adversarial_weight * loss
        return adversarial if extra is None else extra + adversarial

    def _update_trackers(self, losses, terms, y, outputs, total, weights):
        logs = super()._update_trackers(losses, terms, y, outputs, total, weights)
        state = self._state()
        if weights is None or state is None or state.terms is None:
            return logs
        loss, accuracy = state.terms
        self._discriminator_loss_tracker.update_state(tf.stop_gradient(loss))
        self._discriminator_accuracy_tracker.update_state(accuracy)
        logs = dict(logs)
        for m in (self._discriminator_loss_tracker, self._discriminator_accuracy_tracker):
            logs[m.name] = tf.reshape(m.result(), tf.shape(logs["loss"]))
        return logs

    @property
    def metrics(self):
        return [
            *super().metrics,
            self._discriminator_loss_tracker,
            self._discriminator_accuracy_tracker,
        ]

    def get_metrics_result(self):
        logs = dict(super().get_metrics_result())
        for m in (self._discriminator_loss_tracker, self._discriminator_accuracy_tracker):
            logs[m.name] = tf.reshape(m.result(), tf.shape(logs["loss"]))
        return logs
