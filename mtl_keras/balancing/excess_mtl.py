"""ExcessMTL: task weights driven by each task's estimated distance to convergence."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from mtl_keras.balancing.base import GradientBalancer, Needs

SCALES = ("one", "tasks")


@keras.saving.register_keras_serializable(package="mtl_keras")
class ExcessMTL(GradientBalancer):
    """He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024.

    A task's excess risk (its loss minus the best achievable) is estimated by a second-order
    Taylor expansion with a diagonal, AdaGrad-style curvature: ``S_i <- S_i + g_i^2`` (per
    parameter, accumulated over the steps) and ``E_i = sum_p g_ip^2 / sqrt(S_ip + eps)``. The
    weights are updated by exponentiated gradient on the simplex, ``w <- w exp(step_size E_i /
    E_i(0)) / Z``, and the update is ``sum_i w_i g_i``: tasks far from convergence get more
    weight, noisy tasks whose loss stays high but whose gradients have settled do not. ``E_i(0)``
    normalises the tasks' scales (and cancels the expansion's factor 1/2): it is the mean excess
    risk of the first ``warmup_steps`` calls, during which the weights stay uniform and only the
    statistics are collected.

    Defaults: ``step_size = 1e-2`` (LibMTL's; TorchJD uses 1.0), ``warmup_steps = 1`` (the
    official code and LibMTL: the first call's estimate is the baseline; the paper's Appendix C.1
    collects statistics for 3 epochs, ``warmup_steps = 3 * steps_per_epoch``), ``eps = 1e-7``
    (the official code's, keeps the first step finite where a gradient element is 0). The paper
    keeps the weights on the simplex (``scale="one"``, the default); the official code and LibMTL
    start from ones and renormalise them to sum to T (``scale="tasks"``, the same weights times
    T). The official code applies the weights to the losses, so the task heads are weighted too:
    :meth:`head_weights` returns this step's weights. The weights are updated in log space, so a
    large ratio saturates instead of overflowing; a task whose warm-up gradients were all zero
    has no baseline and a ratio of 0.

    State (non-trainable variables, saved with the model): the (T, P) sum of squared gradients
    (T x P floats; the trainer calls :meth:`build_parameter_state` with the shared variables'
    sizes), the log-weights, the baseline and the call count.

    Example:
        >>> b = ExcessMTL()
        >>> b.aggregate(tf.constant([[1.0, 0.0], [0.0, 3.0]])).numpy()  # warm-up: the mean
        array([0.5, 1.5], dtype=float32)
    """

    needs = Needs({"shared": "matrix"})

    def __init__(
        self,
        step_size: float = 1e-2,
        warmup_steps: int = 1,
        scale: str = "one",
        eps: float = 1e-7,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not float(step_size) > 0.0:
            raise ValueError(f"ExcessMTL step_size must be positive, got {step_size}")
        if int(warmup_steps) < 1:
            raise ValueError(
                f"ExcessMTL warmup_steps must be >= 1 (the baseline comes from them), got "
                f"{warmup_steps}"
            )
        if scale not in SCALES:
            raise ValueError(f"ExcessMTL scale must be 'one' or 'tasks', got {scale!r}")
        self.step_size, self.warmup_steps = float(step_size), int(warmup_steps)
        self.scale, self.eps = scale, float(eps)

    def build_state(self, num_tasks: int) -> None:
        uniform = keras.initializers.Constant(-math.log(num_tasks))
        self.log_weights = self.add_state("log_weights", (num_tasks,), uniform)
        self.baseline = self.add_state("baseline", (num_tasks,))
        self.calls = self.add_state("calls", (), dtype="int64")

    def build_parameter_state(self, sizes) -> None:
        self.num_params = int(sum(int(s) for s in sizes))
        self.squares = self.add_state("squared_gradient_sum", (self.num_tasks, self.num_params))

    def head_weights(self, losses, step):
        w = tf.exp(tf.convert_to_tensor(self.log_weights))
        return w * float(self.num_tasks) if self.scale == "tasks" else w

    def aggregate(self, jacobian, losses=None, step=None):
        jacobian = tf.convert_to_tensor(jacobian)
        j32, losses, step = self._prepare_parameter_aggregate(
            jacobian, losses, step, "ExcessMTL's statistics hold"
        )
        squares = tf.convert_to_tensor(self.squares) + tf.square(j32)
        self.squares.assign(squares)
        risk = tf.reduce_sum(tf.square(j32) * tf.math.rsqrt(squares + self.eps), axis=1)
        calls, baseline = tf.convert_to_tensor(self.calls), tf.convert_to_tensor(self.baseline)
        self.calls.assign_add(1)
        warm = calls < self.warmup_steps
        baseline = tf.where(warm, baseline + risk, baseline)
        last_warm = tf.equal(calls, self.warmup_steps - 1)
        baseline = tf.where(last_warm, baseline / float(self.warmup_steps), baseline)
        self.baseline.assign(baseline)
        log_weights = tf.convert_to_tensor(self.log_weights)
        logits = log_weights + self.step_size * tf.math.divide_no_nan(risk, baseline)
        self.log_weights.assign(tf.where(warm, log_weights, tf.nn.log_softmax(logits)))
        update = tf.linalg.matvec(j32, self.head_weights(losses, step), transpose_a=True)
        return tf.cast(update, jacobian.dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "step_size": self.step_size,
            "warmup_steps": self.warmup_steps,
            "scale": self.scale,
            "eps": self.eps,
        }
