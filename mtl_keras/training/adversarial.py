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

**Balancers.** Loss-level balancers only: the adversarial term is an
:class:`~mtl_keras.training.objective.ObjectiveTerm`, added outside the balancer like the
auxiliary losses. A gradient-level balancer would need the second-order adversarial term inside
each of its per-task backward passes.

**Distribution** as the base trainer: the term is divided by the replica count, and the
discriminator's pixel counts are averaged over replicas, so replicas' gradients sum to those of the
global batch. **Mixed precision**: ASTMT's tail and the discriminator compute in float32, so the
inner gradient is of the unscaled float32 loss, without float16 underflow; the outer backward pass
is loss-scaled as the base trainer's.

**Implementation**: :class:`AdversarialTerm` declares the features as tensors the step's forward
pass returns ("taps") and computes the term from them; the trainer's step is the plain one (loss
scaling, skipped non-finite steps, auxiliary losses, logs). :class:`AdversarialMultiTaskModel` is
:class:`~mtl_keras.training.MultiTaskModel` with that term.

**Cost**: the tails run and are differentiated once more, and the outer backward pass goes
through the inner one: on CPU a step takes 1.2-1.4x the plain step's CPU time (the tiny test
model; ``astmt_synthetic``, six tasks, 64x64, batch 8: 1.3x), tracing it about 1.7x.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.architectures.astmt import (
    build_task_discriminator,
    discriminator_terms,
    task_features,
)
from mtl_keras.training import replicas
from mtl_keras.training.model import MultiTaskModel
from mtl_keras.training.objective import ObjectiveTerm
from mtl_keras.training.subgraph import Subgraph


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


class _Parts:  # graph functions over the network, untracked: the network saves once
    def __init__(self, network, features, tasks):
        self.forward = Subgraph(network.input, {t: features[t] for t in tasks})
        self.tails = {t: Subgraph([network.input, features[t]], network.output[t]) for t in tasks}


@keras.saving.register_keras_serializable(package="mtl_keras")
class AdversarialTerm(ObjectiveTerm):
    """ASTMT's adversarial task discriminator on loss gradients, as an objective term.

    Args:
        discriminator: ``gradients (B, h, w, C) -> logits (B, h, w, T)``, behind its own gradient
            reversal; default :func:`~mtl_keras.architectures.astmt.build_task_discriminator`
            (depth 2, 1x1 kernels) with ``discriminator_kwargs``, built when bound to a network.
        discriminator_kwargs: arguments of the default discriminator.
        adversarial_weight: weight of the discriminator's loss in the objective (ASTMT: 0.01).
        reversal_steps: ramp the reversal strength with :func:`reversal_schedule` over this many
            steps (the run's total, as ASTMT); None keeps it constant (the discriminator's own
            reversal scale, 1 by default).

    Logs ``discriminator_loss`` and ``discriminator_accuracy`` (per-pixel, mean over tasks;
    chance is ``1 / T``) in training.
    """

    log_names = ("discriminator_loss", "discriminator_accuracy")

    def __init__(
        self,
        discriminator: keras.Model | None = None,
        discriminator_kwargs: Mapping | None = None,
        adversarial_weight: float = 0.01,
        reversal_steps: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight}")
        if reversal_steps is not None and reversal_steps < 1:
            raise ValueError(f"reversal_steps must be a positive step count, got {reversal_steps}")
        if discriminator is not None and discriminator_kwargs:
            raise ValueError("discriminator_kwargs apply to the default discriminator only")
        self.discriminator = discriminator  # tracked: in the trainer's weights and optimizer
        self.discriminator_kwargs = dict(discriminator_kwargs or {})
        self.adversarial_weight = float(adversarial_weight)
        self.reversal_steps = reversal_steps
        self.tasks: tuple[str, ...] = ()

    def bind(self, network, specs, path, balancer) -> dict:
        if path != "loss":
            raise ValueError(
                "the adversarial discriminator (ASTMT) works with loss-level balancers only; "
                f"{balancing.method_name(balancer)!r} balances gradients, which would need the "
                "second-order adversarial term inside each of its per-task backward passes. "
                "Use a loss-level balancer (e.g. 'fixed', 'uncertainty', 'dwa') or "
                "adversarial_weight=0"
            )
        self.tasks = tuple(specs)
        features = task_features(network)
        missing = [t for t in self.tasks if t not in features]
        if missing:
            raise ValueError(
                f"network {network.name!r} has no TaskFeatures marker for task(s) {missing} "
                f"(markers: {sorted(features)}); the adversarial discriminator needs ASTMT's "
                "per-task decoder features: build the network with architecture='astmt'"
            )
        channels = {features[t].shape[-1] for t in self.tasks}
        if len(channels) != 1:
            raise ValueError(
                f"the tasks' TaskFeatures have different channel counts {sorted(channels)}; one "
                "discriminator classifies them all"
            )
        parts = _Parts(network, features, self.tasks)
        stateful = sorted(
            {op.name for tail in parts.tails.values() for op in tail.operations}
            & {layer.name for layer in network.layers if layer.non_trainable_weights}
        )
        if stateful:
            raise ValueError(
                f"layers {stateful} between the TaskFeatures and the predictions keep state "
                "(e.g. batch-norm statistics); the adversarial step recomputes that tail and "
                "needs it stateless"
            )
        self._parts = parts
        if self.discriminator is None:
            self.discriminator = build_task_discriminator(
                channels.pop(), len(self.tasks), **self.discriminator_kwargs
            )
        self.built = True
        return {f"features/{t}": features[t] for t in self.tasks}

    def reversal_strength(self, step) -> tf.Tensor:
        """The multiplier of the reversed gradient at ``step`` (1 without a schedule)."""
        if self.reversal_steps is None:
            return tf.constant(1.0)
        return reversal_schedule(step, self.reversal_steps)

    def task_gradients(self, x, y, features, task_loss, training=True) -> dict[str, tf.Tensor]:
        """``{task: dL_task / dF_task}`` (float32), differentiable: recorded by any active tape."""
        grads = {}
        for t in self.tasks:
            f = features[t]
            with tf.GradientTape() as inner:
                inner.watch(f)
                loss = task_loss(t, y[t], self._parts.tails[t]([x, f], training=training))
            g = inner.gradient(loss, f)
            grads[t] = tf.zeros_like(f, tf.float32) if g is None else tf.cast(g, tf.float32)
        return grads

    def terms(self, x, y, features, task_loss, step, training=True):
        """The discriminator's loss (differentiable, second order) and accuracy on one batch;
        ``features`` None runs a forward pass for them."""
        if features is None:
            features = self._parts.forward(x, training=training)
        grads = self.task_gradients(x, y, features, task_loss, training)
        if self.reversal_steps is not None:
            strength = tf.stop_gradient(self.reversal_strength(step))
            grads = {t: _scale_gradient(g, strength) for t, g in grads.items()}
        return discriminator_terms(
            self.discriminator, grads, self.tasks, count_mean=replicas.replica_mean
        )

    def compute(self, x, y, taps, task_loss, step):
        features = {t: taps[f"features/{t}"] for t in self.tasks}
        loss, accuracy = self.terms(x, y, features, task_loss, step)
        logs = {"discriminator_loss": loss, "discriminator_accuracy": accuracy}
        return self.adversarial_weight * loss, logs

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            discriminator=keras.saving.serialize_keras_object(self.discriminator),
            adversarial_weight=self.adversarial_weight,
            reversal_steps=self.reversal_steps,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="mtl_keras")
class AdversarialMultiTaskModel(MultiTaskModel):
    """:class:`MultiTaskModel` with an :class:`AdversarialTerm` (ASTMT) in its objective.

    Args:
        network: a network with one :class:`~mtl_keras.architectures.astmt.TaskFeatures` marker
            per task (``architectures.build("astmt", ...)``).
        tasks: as :class:`MultiTaskModel`.
        balancer: a loss-level balancer (instance or name).
        discriminator, discriminator_kwargs, adversarial_weight, reversal_steps: as
            :class:`AdversarialTerm`.
        **kwargs: the other arguments of :class:`MultiTaskModel`.

    The logged ``loss`` includes ``adversarial_weight * L_D``.

    Example:
        >>> network = architectures.build("astmt", ["semseg", "depth"])
        >>> model = AdversarialMultiTaskModel(network, reversal_steps=1000)
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
        terms = list(kwargs.pop("objective_terms", ()))  # a loaded model's term comes back here
        if not any(isinstance(t, AdversarialTerm) for t in terms):
            args = (discriminator, discriminator_kwargs, adversarial_weight, reversal_steps)
            terms.insert(0, AdversarialTerm(*args))
        super().__init__(network, tasks, balancer, objective_terms=terms, **kwargs)
        self._adversarial = next(t for t in terms if isinstance(t, AdversarialTerm))

    @property
    def discriminator(self) -> keras.Model:
        return self._adversarial.discriminator

    @property
    def adversarial_weight(self) -> float:
        return self._adversarial.adversarial_weight

    @property
    def reversal_steps(self) -> int | None:
        return self._adversarial.reversal_steps

    def reversal_strength(self) -> tf.Tensor:
        """The current multiplier of the reversed gradient (1 without a schedule)."""
        return self._adversarial.reversal_strength(self.optimizer.iterations)

    def adversarial_terms(self, x, y, features=None, training: bool = True):
        """The discriminator's loss (differentiable, second order) and accuracy on one batch.

        Args:
            x: the images; y: the labels by task.
            features: ``{task: F_task}`` of a forward pass already run; None runs one (in mode
                ``training``).
        """
        return self._adversarial.terms(
            x, y, features, self._objective.loss, self.optimizer.iterations, training
        )
