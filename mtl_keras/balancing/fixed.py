"""Fixed task weights: the plain weighted sum of task losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing.base import LossBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class FixedWeights(LossBalancer):
    """``L = sum_i w_i L_i`` with constant weights.

    Uniform weights are 1 per task (the sum, as LibMTL's EW and the survey's fixed-weight runs);
    ``weights`` may be a sequence in task order or a mapping by task name, e.g. the survey's
    PASCAL-Context weights ``{"semseg": 1, "human_parts": 2, "saliency": 5, "edges": 50,
    "normals": 10}`` (Vandenhende et al., TPAMI 2022, Sec. 5). Tasks missing from a mapping get 1.

    Example:
        >>> b = FixedWeights({"semseg": 1.0, "depth": 2.0}); b.setup(["semseg", "depth"])
        >>> [float(v) for v in b.combine(tf.constant([1.0, 3.0]), None, 0)[0:1]]
        [7.0]
    """

    def __init__(self, weights: Sequence[float] | Mapping[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.init_weights = dict(weights) if isinstance(weights, Mapping) else weights

    def build_state(self, num_tasks: int) -> None:
        w = self.init_weights
        if w is None:
            values = [1.0] * num_tasks
        elif isinstance(w, Mapping):
            unknown = sorted(set(w) - set(self.task_names))
            if unknown:
                raise ValueError(
                    f"fixed weights name unknown tasks {unknown}; the model's tasks are "
                    f"{list(self.task_names)}"
                )
            values = [float(w.get(t, 1.0)) for t in self.task_names]
        else:
            values = [float(v) for v in w]
            if len(values) != num_tasks:
                raise ValueError(
                    f"fixed weights has {len(values)} values for {num_tasks} tasks "
                    f"{list(self.task_names)}; give one weight per task or a mapping by name"
                )
        self.task_weights = tf.constant(values, tf.float32)

    def combine(self, losses, global_losses, step):
        return tf.reduce_sum(self.task_weights * losses), self.task_weights

    def get_config(self) -> dict:
        return {**super().get_config(), "weights": self.init_weights}
