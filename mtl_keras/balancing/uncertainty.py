"""Uncertainty weighting: task weights from learned homoscedastic noise."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras.balancing.base import LossBalancer

TASK_TYPES = {"regression": 0.5, "classification": 1.0}


@keras.saving.register_keras_serializable(package="mtl_keras")
class UncertaintyWeighting(LossBalancer):
    """Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses", CVPR 2018.

    ``L = sum_i k_i exp(-s_i) L_i + s_i / 2`` with ``s_i = log sigma_i^2`` learned jointly with the
    network (``k_i = 1/2`` for regression, ``1`` for classification: Eq. 7 of the paper).

    Defaults: every task is treated as regression (``k = 1/2``), so the objective is
    ``sum_i (exp(-s_i) L_i + s_i) / 2``, the form used by MTAN, LibMTL, Nash-MTL and FAMO;
    ``task_types`` switches single tasks to the classification factor. ``s`` starts at
    ``init_log_variance = 0`` (Nash-MTL/FAMO; LibMTL starts at -0.5). ``s`` is a trainable
    variable of this layer, so the model's optimizer trains it with the model's learning rate, as
    in LibMTL and MTAN (Nash-MTL/FAMO use a separate Adam with lr 0.025). The objective is linear
    in the losses, so the replica-summed gradient is exactly the global one.

    Example:
        >>> b = UncertaintyWeighting(); b.setup(["semseg", "depth"])
        >>> float(b.combine(tf.constant([2.0, 4.0]), None, 0)[0])  # (2 + 4) / 2
        3.0
    """

    def __init__(
        self,
        init_log_variance: float = 0.0,
        task_types: Mapping[str, str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.init_log_variance = float(init_log_variance)
        self.task_types = dict(task_types or {})
        bad = {k: v for k, v in self.task_types.items() if v not in TASK_TYPES}
        if bad:
            raise ValueError(
                f"task_types values must be 'regression' or 'classification', got {bad}"
            )

    def build_state(self, num_tasks: int) -> None:
        unknown = sorted(set(self.task_types) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"task_types names unknown tasks {unknown}; the model's tasks are "
                f"{list(self.task_names)}"
            )
        factors = [TASK_TYPES[self.task_types.get(t, "regression")] for t in self.task_names]
        self.factors = tf.constant(factors, tf.float32)
        self.log_variances = self.add_weight(
            name="log_variances",
            shape=(num_tasks,),
            initializer=keras.initializers.Constant(self.init_log_variance),
            dtype="float32",
            trainable=True,
            autocast=False,
        )

    def combine(self, losses, global_losses, step):
        s = tf.convert_to_tensor(self.log_variances)
        precision = self.factors * tf.exp(-s)
        objective = tf.reduce_sum(precision * tf.cast(losses, tf.float32)) + 0.5 * tf.reduce_sum(s)
        return objective, precision

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "init_log_variance": self.init_log_variance,
            "task_types": self.task_types,
        }
