"""STCH: a smooth Tchebycheff (smooth maximum) scalarization of the task losses."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._preference import Preference, preference_vector, stored
from mtl_keras.balancing.base import LossBalancer

TRANSFORMS = ("log", "none")
UNITS = ("epoch", "step")


@keras.saving.register_keras_serializable(package="mtl_keras")
class SmoothTchebycheff(LossBalancer):
    """Lin et al., "Smooth Tchebycheff Scalarization for Multi-Objective Optimization", ICML 2024.

    ``L = mu log sum_i exp(lambda_i (f_i - z_i) / mu)``: a smooth maximum of the preference-weighted
    gaps between each task's objective ``f_i`` and its reference ``z_i``. As ``mu -> 0`` it tends
    to the Tchebycheff scalarization ``max_i lambda_i (f_i - z_i)``: the task furthest behind its
    reference gets most of the weight, ``p = softmax(lambda (f - z) / mu)``.

    Schedule (the authors' multi-task code, also LibMTL's): for ``warmup`` epochs the objective is
    ``sum_i f_i``; it stays so for the next ``estimate`` epochs, whose mean losses ``Lbar`` are the
    estimated reference point ``z = f(Lbar)`` (where training stands after the warm-up, a nadir
    estimate); then the smooth Tchebycheff objective starts. ``unit="step"`` counts steps instead
    (``on_epoch_end`` is then not needed). ``estimate=0`` makes no estimate: ``z = 0``.

    ``transform="log"`` (the authors' multi-task code): ``f_i = log(L_i + eps)``, so
    ``f_i - z_i = log(L_i / Lbar_i)``: every loss is measured relative to its own level after the
    warm-up, whatever its unit, and the warm-up objective is ``sum_i log L_i``.
    ``transform="none"``: ``f_i = L_i``, the paper's formula on the raw losses.

    Defaults: ``mu = 1``, ``warmup = 4`` and ``estimate = 1`` epoch (LibMTL's ``STCH_mu`` and
    ``STCH_warmup_epoch = 4``: the reference is the mean loss of the fifth epoch and STCH runs
    from the sixth), ``eps = 1e-20`` (LibMTL's). The preference ``lambda`` is uniform on the
    simplex, ``1/T`` (the paper), unless given: a sequence in task order or a mapping by task
    name, every value positive. The paper and its code differ here: the code takes
    ``lambda_i = 1`` and multiplies the objective by T, which ``preference=[1.0] * T,
    scale="tasks"`` reproduces (the gradient then stays the warm-up's when all tasks are equally
    far behind); ``scale="one"`` (default) is the paper's objective.

    The objective returned is the gradient-equivalent ``sum_i w_i L_i`` with ``w_i = dL/dL_i =
    lambda_i p_i f'(L_i)`` (warm-up: ``w_i = f'(L_i)``) computed from the all-reduced losses and
    held constant, so the replicas' gradients sum to the gradient of the global batch's objective.
    The estimate and the clock live in non-trainable variables (saved, equal on every replica).

    Example:
        >>> b = SmoothTchebycheff(warmup=0, estimate=0, transform="none"); b.setup(["a", "b"])
        >>> b.combine(tf.ones(2), tf.constant([1.0, 3.0]), 0)[1].numpy().round(4)
        array([0.1345, 0.3655], dtype=float32)
    """

    def __init__(
        self,
        mu: float = 1.0,
        preference: Preference = None,
        warmup: int = 4,
        estimate: int = 1,
        unit: str = "epoch",
        transform: str = "log",
        scale: str = "one",
        eps: float = 1e-20,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not float(mu) > 0:
            raise ValueError(f"STCH mu must be positive (the smoothing; 1.0 in LibMTL), got {mu}")
        if int(warmup) < 0 or int(estimate) < 0:
            raise ValueError(
                f"STCH warmup and estimate must be >= 0 {unit}s, got {warmup} and {estimate}"
            )
        if unit not in UNITS:
            raise ValueError(f"unknown STCH unit {unit!r}; valid: {', '.join(UNITS)}")
        if transform not in TRANSFORMS:
            raise ValueError(
                f"unknown STCH transform {transform!r}; valid: {', '.join(TRANSFORMS)}"
            )
        if scale not in ("one", "tasks"):
            raise ValueError(f"STCH scale must be 'one' or 'tasks', got {scale!r}")
        self.mu, self.preference = float(mu), stored(preference)
        self.warmup, self.estimate = int(warmup), int(estimate)
        self.unit, self.transform, self.scale, self.eps = unit, transform, scale, float(eps)

    def build_state(self, num_tasks: int) -> None:
        self.preference_weights = preference_vector(self.preference, self.task_names, "STCH")
        self.clock = self.add_state("clock", (), dtype="int64")  # epochs or steps seen
        self.loss_sum = self.add_state("loss_sum", (num_tasks,))
        self.loss_steps = self.add_state("loss_steps", ())

    def _objectives(self, losses):
        return tf.math.log(losses + self.eps) if self.transform == "log" else losses

    def _slopes(self, losses):
        return 1.0 / (losses + self.eps) if self.transform == "log" else tf.ones_like(losses)

    def combine(self, losses, global_losses, step):
        g = tf.cast(tf.stop_gradient(losses if global_losses is None else global_losses), "float32")
        clock = tf.convert_to_tensor(self.clock)
        start = self.warmup + self.estimate
        estimating = (clock >= self.warmup) & (clock < start)
        self.loss_sum.assign_add(tf.where(estimating, g, tf.zeros_like(g)))
        self.loss_steps.assign_add(tf.cast(estimating, tf.float32))
        if self.unit == "step":
            self.clock.assign_add(1)
        reference = tf.zeros_like(g)
        if self.estimate:
            mean = tf.math.divide_no_nan(tf.convert_to_tensor(self.loss_sum), self.loss_steps)
            reference = self._objectives(mean)
        lam = self.preference_weights
        p = tf.nn.softmax(lam * (self._objectives(g) - reference) / self.mu)
        w = lam * p * self._slopes(g)
        if self.scale == "tasks":
            w = w * float(self.num_tasks)
        w = tf.where(clock >= start, w, self._slopes(g))
        return tf.reduce_sum(w * tf.cast(losses, tf.float32)), w

    def on_epoch_end(self) -> None:
        """Count an epoch (``unit="epoch"``; else a no-op)."""
        if self.unit == "epoch":
            self.clock.assign_add(1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "mu": self.mu,
            "preference": self.preference,
            "warmup": self.warmup,
            "estimate": self.estimate,
            "unit": self.unit,
            "transform": self.transform,
            "scale": self.scale,
            "eps": self.eps,
        }
