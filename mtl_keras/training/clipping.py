"""Gradient clipping that gives the same step on one device and on many.

A Keras optimizer clips in ``apply`` (``clipnorm``, ``global_clipnorm``, ``clipvalue``), before
its TensorFlow backend sums the replicas' gradients. Under a ``tf.distribute`` strategy each
replica's gradient is its share of the global batch's (`mtl_keras.training.replicas`), so Keras
clips the shares: with ``global_clipnorm=c`` and R replicas, each share is held to norm ``c`` and
their sum may reach ``R c``, and the step differs from one device's on the same global batch.

`apply` keeps the optimizer's own rule but applies it where one device would: with more than one
replica, the shares are summed over the replicas (one all-reduce of the gradients, paid only when
the optimizer clips), clipped by the optimizer's rule, divided back into equal shares and handed
to the optimizer, whose own clipping `install` (called by ``MultiTaskModel.compile``) has made a
no-op inside a replica of a multi-replica strategy, so the sum the optimizer forms is the clipped
global gradient. With one replica, or an optimizer that does not clip, it is
``optimizer.apply`` itself. (Nothing is switched at trace time: a ``MirroredStrategy`` traces its
replicas in threads that share the optimizer object.)

Gradient clipping by norm is the stabiliser of Pascanu, Mikolov & Bengio, "On the difficulty of
training recurrent neural networks", ICML 2013; MLoRE (Yang et al., CVPR 2024) trains with a
global norm of 10 (recipe field ``clip_norm``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.training import replicas
from mtl_keras.training.precision import loss_scale

CLIP_ATTRIBUTES = ("clipnorm", "global_clipnorm", "clipvalue")


def _clipping_optimizer(optimizer):
    """The optimizer whose attributes say how to clip (a ``LossScaleOptimizer``'s inner one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def clips(optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether ``optimizer`` (or the optimizer a ``LossScaleOptimizer`` wraps) clips."""
    inner = _clipping_optimizer(optimizer)
    return any(getattr(inner, a, None) for a in CLIP_ATTRIBUTES)


def install(optimizer: keras.optimizers.Optimizer) -> None:
    """Make the optimizer's own clipping a no-op inside a replica of a multi-replica strategy,
    where `apply` has clipped the global gradient already; elsewhere (one device, or the
    optimizer used on its own) it clips as before. Idempotent."""
    inner = _clipping_optimizer(optimizer)
    if hasattr(inner, "_global_batch_clip"):
        return
    original = inner._clip_gradients
    inner._global_batch_clip = original

    def clip_outside_replicas(grads):
        return grads if replicas.count() > 1 and _in_replica() else original(grads)

    inner._clip_gradients = clip_outside_replicas


def _in_replica() -> bool:
    return tf.distribute.get_replica_context() is not None


def apply(optimizer: keras.optimizers.Optimizer, grads, variables) -> None:
    """``optimizer.apply(grads, variables)``, clipping the global-batch gradient, not the replicas'
    shares of it (see the module docstring).

    Under mixed float16 ``grads`` are loss-scaled (a ``LossScaleOptimizer`` scales them back and
    skips non-finite steps): they are scaled back before clipping and scaled again after, exact
    since the scale is a power of two; a non-finite step stays non-finite and is skipped.
    """
    if replicas.count() == 1 or not clips(optimizer):
        optimizer.apply(grads, variables)
        return
    inner = _clipping_optimizer(optimizer)
    if not hasattr(inner, "_global_batch_clip"):
        raise RuntimeError(
            "the optimizer clips but mtl_keras.training.clipping.install was not called on it; "
            "compile the MultiTaskModel with this optimizer"
        )
    scale = loss_scale(optimizer)
    total = replicas.replica_sum(list(grads))
    if scale is not None:
        total = [g / tf.cast(scale, g.dtype) for g in total]
    clipped = inner._global_batch_clip(total)
    if scale is not None:
        clipped = [g * tf.cast(scale, g.dtype) for g in clipped]
    optimizer.apply([replicas.share(g) for g in clipped], variables)
