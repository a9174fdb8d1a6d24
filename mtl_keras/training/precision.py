"""Mixed precision: the Keras dtype policy of a run, and the loss scale of its optimizer.

``"mixed_float16"`` and ``"mixed_bfloat16"`` compute layers in 16 bits and keep variables in
float32 (Micikevicius et al., "Mixed Precision Training", ICLR 2018). Task losses are always
computed in float32 (:mod:`mtl_keras.tasks.losses`), and so are metrics and the serving outputs of
an export. Under ``"mixed_float16"`` Keras wraps the optimizer in a ``LossScaleOptimizer``;
:class:`LossScaling` holds all that a training step does about it: every backward pass runs on
the loss times the dynamic scale (no float16 underflow), per-task gradients are unscaled before a
balancer sees them (norms, Gramians and projections are of the true gradients), the update is
scaled back for the optimizer, which unscales it, and a step with a non-finite gradient on any
replica is skipped everywhere and leaves the balancer's state unchanged (see
``docs/scale_out.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

from mtl_keras.training import replicas

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(
            f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)} (e.g. --set "
            "precision=mixed_bfloat16)"
        )
    return name


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Build layers under the global dtype policy ``name``; restore the previous one after.

    Example:
        >>> with precision_policy("mixed_bfloat16"):
        ...     layer = keras.layers.Dense(2)
        >>> layer.compute_dtype, layer.variable_dtype
        ('bfloat16', 'float32')
    """
    check_precision(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def loss_scale(optimizer) -> tf.Tensor | None:
    """The current dynamic loss scale of a ``LossScaleOptimizer``, else None."""
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return None
    return tf.convert_to_tensor(optimizer.scale_loss(1.0), tf.float32)


class LossScaling:
    """One training step's loss scaling; every method is exact plain arithmetic without a scale.

    Args:
        optimizer: the model's optimizer (a ``LossScaleOptimizer`` under mixed float16).
        state: the balancer's state variables, restored when the step is skipped.
    """

    def __init__(self, optimizer, state=()):
        self.scale = loss_scale(optimizer)
        self._optimizer = optimizer
        # a skipped step must leave the balancer's state as it was before the step
        self._state = (
            [] if self.scale is None else [(v, tf.identity(tf.convert_to_tensor(v))) for v in state]
        )

    @property
    def learning_rate(self) -> tf.Tensor:
        """The optimizer's learning rate at this step (its schedule's value), float32."""
        return tf.cast(self._optimizer.learning_rate, tf.float32)

    def scaled_gradients(self, tape, target, sources) -> list:
        """Gradients of ``scale * target`` (None where unconnected), for the optimizer as is."""
        return tape.gradient(target, sources, output_gradients=self.scale)

    def gradients(self, tape, target, sources, output_gradients=None) -> list:
        """True gradients, zeros where unconnected; the backward pass itself is loss-scaled.

        The output gradients (ones by default) are multiplied by the scale in float32, then cast
        to each target's dtype; the results are divided by it in float32.
        (``UnconnectedGradients.ZERO`` fails on Keras variables in TF 2.21 eager mode.)
        """
        if self.scale is not None or output_gradients is not None:
            output_gradients = self._output_gradients(target, output_gradients)
        grads = tape.gradient(target, sources, output_gradients=output_gradients)
        out = []
        for g, s in zip(grads, sources):
            if g is None:
                g = tf.zeros_like(tf.convert_to_tensor(s))
            elif self.scale is not None:
                g = tf.cast(g, tf.float32) / self.scale
            out.append(g)
        return out

    def _output_gradients(self, target, given):
        single = not isinstance(target, (list, tuple))
        targets = [target] if single else list(target)
        given = [given] if single else list(given or [None] * len(targets))
        out = []
        for t, o in zip(targets, given):
            o = tf.ones_like(t, tf.float32) if o is None else tf.cast(o, tf.float32)
            out.append(tf.cast(o if self.scale is None else o * self.scale, t.dtype))
        return out[0] if single else out

    def for_optimizer(self, grads, variables, scaled: bool):
        """``(grads, variables, finite)`` to apply: pairs without a gradient dropped; true
        gradients scaled back (the scale is a power of two: exact); under a scale, NaN gradients
        on every replica when any replica's step, or the balancer's new state, is non-finite, so
        all replicas skip it and halve the scale together (the optimizer alone would look at the
        first replica only). ``finite`` is None without a scale."""
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads, variables = [g for g, _ in pairs], [v for _, v in pairs]
        if self.scale is None:
            return grads, variables, None
        if not scaled:
            grads = [tf.cast(tf.cast(g, tf.float32) * self.scale, g.dtype) for g in grads]
        finite = replicas.all_finite_everywhere([*grads, *(v for v, _ in self._state)])
        poison = tf.where(finite, 0.0, float("nan"))
        return [g + tf.cast(poison, g.dtype) for g in grads], variables, finite

    def keep_state_if(self, finite) -> None:
        """A skipped step leaves the balancer's state as it was."""
        if finite is None:
            return
        for v, before in self._state:
            v.assign(tf.where(finite, tf.convert_to_tensor(v), before))
