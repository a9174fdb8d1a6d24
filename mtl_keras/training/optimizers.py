"""Adam with each step's constants built once per step, not once per variable.

``keras.optimizers.Adam`` builds, for every trainable variable, its own casts of the learning
rate and the step count, both bias-correction powers and the step size, and its weight decay
evaluates the learning-rate schedule again per variable: about 58 graph ops per variable with a
``PolynomialDecay`` schedule and weight decay (measured by ``benchmarks/trace_times.py``), against
about 10 for the update itself. On networks with many variables (MTI-Net 582, MLoRE 1,116) that
is most of the training step's graph, and tracing and optimising the graph costs about 1 ms of CPU
per op: MTI-Net's first step took a minute on 2 cores, its steady step 0.7 s.

:class:`Adam` is the same optimizer, update for update: Kingma & Ba, "Adam: A Method for Stochastic
Optimization", ICLR 2015, with Keras's bias correction folded into the step size
``alpha_t = lr_t sqrt(1 - beta_2^t) / (1 - beta_1^t)`` and Keras's decoupled weight decay
``w <- w - w wd lr_t`` (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR
2019). Only where those constants are built changes: once per dtype and device in each step,
inside the optimizer's cross-replica update (one thread, also under a ``MirroredStrategy``), and
shared by every variable. The result equals ``keras.optimizers.Adam``'s bit for bit (tested, on
one device and on two replicas), its variables and saved state are Keras's, and it saves in
``.keras`` files as ``mtl_keras>Adam``.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="mtl_keras")
class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (same arguments, same updates) with its per-step constants
    built once per step; see the module docstring."""

    _constants: dict | None = None

    def _shared(self, key, build):
        """``build()``, once per ``key`` within one update (every time outside one)."""
        if self._constants is None:
            return build()
        if key not in self._constants:
            self._constants[key] = build()
        return self._constants[key]

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        self._constants = {}
        try:
            super()._distributed_tf_update_step(distribution, grads_and_vars, learning_rate)
        finally:
            self._constants = None

    def update_step(self, gradient, variable, learning_rate):
        """Keras's Adam step with ``alpha_t`` built once per dtype and device."""

        def step_size():
            lr = ops.cast(learning_rate, variable.dtype)
            local_step = ops.cast(self.iterations + 1, variable.dtype)
            beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
            beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
            return lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)

        alpha = self._shared(("alpha", variable.dtype, variable.device), step_size)
        gradient = ops.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsgrad:
            v_hat = self._velocity_hats[self._get_variable_index(variable)]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        self.assign_sub(
            variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), self.epsilon))
        )

    def _apply_weight_decay(self, variables):
        """Keras's decoupled weight decay, ``w <- w - w wd lr_t``, with ``lr_t`` (the schedule's
        value) and ``wd`` cast once per dtype and device."""
        if self.weight_decay is None:
            return

        def decay_all(distribution, variables, **kwargs):
            constants = {}

            def decay(variable):
                if not self._use_weight_decay(variable):
                    return
                key = (variable.dtype, variable.device)
                if key not in constants:
                    constants[key] = (
                        tf.cast(self.learning_rate, variable.dtype),
                        tf.cast(self.weight_decay, variable.dtype),
                    )
                lr, wd = constants[key]
                variable.assign_sub(variable * wd * lr)

            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value  # the tf.Variable
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            decay_all, self._distribution_strategy, variables
        )
