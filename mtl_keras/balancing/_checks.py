"""The input checks of ``aggregate``: a (T, P) floating-point Jacobian with finite entries."""

from __future__ import annotations

import tensorflow as tf


def checked_jacobian(jacobian) -> tf.Tensor:
    """``jacobian`` as a tensor; refuses one that is not floating point (``aggregate`` returns the
    update in the Jacobian's dtype, which would truncate it), not of rank 2, or without rows."""
    jacobian = tf.convert_to_tensor(jacobian)
    if not jacobian.dtype.is_floating:
        raise TypeError(
            f"aggregate expects a floating-point (T, P) Jacobian, got {jacobian.dtype.name} "
            "(the update comes back in that dtype, truncated); cast it first, e.g. "
            "aggregate(tf.cast(J, tf.float32))"
        )
    if jacobian.shape.rank != 2:
        raise ValueError(
            f"aggregate expects a (T, P) Jacobian (T tasks, P parameters), got shape "
            f"{jacobian.shape}; stack the flattened per-task gradients as rows"
        )
    if jacobian.shape[0] == 0:
        raise ValueError("aggregate expects a (T, P) Jacobian with T >= 1 task rows, got 0")
    return jacobian


def finite_jacobian(j32: tf.Tensor, method: str, task_names) -> tf.Tensor:
    """``j32``, refused when it has NaN or inf entries: at once, naming the rows, for a concrete
    (eager) Jacobian; by ``tf.debugging.assert_all_finite`` when the step runs in a graph (a no-op
    under XLA, which has no such check)."""
    message = (
        f"{method}.aggregate got a Jacobian with NaN or inf entries; check the task losses and "
        "gradients (a NaN label, a too large learning rate) before balancing"
    )
    if not tf.executing_eagerly():
        return tf.debugging.assert_all_finite(j32, message)
    finite = tf.reduce_all(tf.math.is_finite(j32), axis=1)
    if not bool(tf.reduce_all(finite)):
        rows = [name for name, ok in zip(task_names, tf.unstack(finite)) if not ok]
        raise ValueError(f"{message}; non-finite rows: {rows}")
    return j32
