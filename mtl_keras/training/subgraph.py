"""Parts of a functional network as graph functions that leave the network saveable."""

from __future__ import annotations

import keras


class Subgraph(keras.Function):
    """A part of a functional network as a graph function: from any of its tensors to others.

    Unlike a ``keras.Model`` built on inner tensors, it adds no node to the network's layers, so
    the network still saves. The losses its layers add are collected by the caller
    (`mtl_keras.training.gradient_paths.base.network_losses`).

    Example:
        >>> inputs = keras.Input((4,))
        >>> hidden = keras.layers.Dense(3)(inputs)
        >>> network = keras.Model(inputs, keras.layers.Dense(2)(hidden))
        >>> tail = Subgraph(hidden, network.output)
        >>> tuple(tail(keras.ops.ones((1, 3))).shape)
        (1, 2)
    """

    def call(self, inputs, training=None):
        def operation_fn(op):
            def run(*args, **kwargs):
                if getattr(op, "_call_has_training_arg", False) and training is not None:
                    kwargs["training"] = training
                return op(*args, **kwargs)

            return run

        return self._run_through_graph(inputs, operation_fn=operation_fn)

    def __call__(self, inputs, training=None):
        return self.call(inputs, training=training)
