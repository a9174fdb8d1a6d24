"""Mixed precision: the Keras dtype policy of a run, and the loss scale of its optimizer.

``"mixed_float16"`` and ``"mixed_bfloat16"`` compute layers in 16 bits and keep variables in
float32 (Micikevicius et al., "Mixed Precision Training", ICLR 2018). Task losses are always
computed in float32 (:mod:`mtl_keras.tasks.losses`), and so are metrics and the serving outputs of
an export. Under ``"mixed_float16"`` Keras wraps the optimizer in a ``LossScaleOptimizer``;
:class:`~mtl_keras.training.MultiTaskModel` scales the backward passes by its dynamic scale and
unscales every per-task gradient before a balancer sees it (see ``docs/scale_out.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

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
