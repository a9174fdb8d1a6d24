"""DTP: focal-loss task weights from each task's running key performance indicator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing.base import LossBalancer

KPI_SOURCES = ("loss", "metric")


@keras.saving.register_keras_serializable(package="mtl_keras")
class DynamicTaskPrioritization(LossBalancer):
    """Guo et al., "Dynamic Task Prioritization for Multitask Learning", ECCV 2018 (task level).

    ``w_i = -(1 - k_i)^gamma_i log k_i``, where ``k_i`` in (0, 1) is a moving average of task i's
    key performance indicator (KPI): ``k <- alpha kpi + (1 - alpha) k``. Hard tasks (low KPI)
    get large weights; mastered tasks (KPI near 1) weights near 0. ``L = sum_i w_i L_i``.

    The KPI is a metric in [0, 1], higher is better (accuracy, mIoU, ...):

    * ``kpi="metric"``: the trainer (or a callback) calls :meth:`observe_kpi` with the latest
      metric values, e.g. after each validation epoch; until the first call the weights are 1.
    * ``kpi="loss"`` (default, since the survey's dense tasks have no cheap per-step metric): a
      proxy computed every step from the all-reduced losses, ``kpi_i = exp(-L_i / L_i(0))`` with
      ``L_i(0)`` the task's loss at the first step (``loss_scale="initial"``: every task starts at
      ``1/e`` and improves towards 1 as its loss falls relative to where it started, so the proxy
      is free of loss units), or ``exp(-L_i)`` (``loss_scale="none"``: the geometric-mean
      likelihood of a cross-entropy loss).

    Defaults: ``gamma = 1`` for every task (the paper tunes one focusing parameter per task; pass
    a sequence or a mapping by task name), ``alpha = 0.1`` (the paper leaves the smoothing factor
    as a hyper-parameter; 0.1 averages about ten observations, suitable for the per-step proxy;
    use a larger value for per-epoch metrics), KPIs clipped to ``[clip, 1 - clip]`` with
    ``clip = 1e-3`` so that weights stay finite. The paper's example-level prioritisation (focal
    loss inside a task) belongs to the task's loss, not here.

    Example:
        >>> b = DynamicTaskPrioritization(kpi="metric"); b.setup(["semseg", "depth"])
        >>> b.observe_kpi(tf.constant([0.5, 0.9]))
        >>> b.combine(tf.ones(2), None, 0)[1].numpy().round(4)  # -(1 - k) log k
        array([0.3466, 0.0105], dtype=float32)
    """

    def __init__(
        self,
        gamma: float | Sequence[float] | Mapping[str, float] = 1.0,
        kpi: str = "loss",
        alpha: float = 0.1,
        loss_scale: str = "initial",
        clip: float = 1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kpi not in KPI_SOURCES:
            raise ValueError(f"unknown DTP kpi source {kpi!r}; valid: {', '.join(KPI_SOURCES)}")
        if loss_scale not in ("initial", "none"):
            raise ValueError(f"DTP loss_scale must be 'initial' or 'none', got {loss_scale!r}")
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"DTP alpha is a smoothing factor in (0, 1], got {alpha}")
        self.gamma = dict(gamma) if isinstance(gamma, Mapping) else gamma
        self.kpi, self.alpha, self.loss_scale, self.clip = kpi, float(alpha), loss_scale, clip

    def build_state(self, num_tasks: int) -> None:
        g = self.gamma
        if isinstance(g, Mapping):
            unknown = sorted(set(g) - set(self.task_names))
            if unknown:
                raise ValueError(
                    f"DTP gamma names unknown tasks {unknown}; tasks are {list(self.task_names)}"
                )
            values = [float(g.get(t, 1.0)) for t in self.task_names]
        elif isinstance(g, Sequence):
            values = [float(v) for v in g]
            if len(values) != num_tasks:
                raise ValueError(
                    f"DTP gamma has {len(values)} values for {num_tasks} tasks; give one per task"
                )
        else:
            values = [float(g)] * num_tasks
        self.gammas = tf.constant(values, tf.float32)
        self.kpi_average = self.add_state("kpi_average", (num_tasks,), "ones")
        self.observed = self.add_state("observed", (), dtype="int64")
        self.initial_losses = self.add_state("initial_losses", (num_tasks,), "ones")

    def observe_kpi(self, kpi) -> None:
        """Fold new KPI values (T,) in [0, 1], higher is better, into the moving average."""
        kpi = tf.clip_by_value(tf.cast(tf.reshape(kpi, [self.num_tasks]), tf.float32), 0.0, 1.0)
        first = self.observed == 0
        previous = tf.convert_to_tensor(self.kpi_average)
        self.kpi_average.assign(
            tf.where(first, kpi, self.alpha * kpi + (1.0 - self.alpha) * previous)
        )
        self.observed.assign_add(1)

    def combine(self, losses, global_losses, step):
        if self.kpi == "loss":
            g = tf.cast(
                tf.stop_gradient(losses if global_losses is None else global_losses), "float32"
            )
            if self.loss_scale == "initial":
                initial = tf.where(self.observed == 0, g, self.initial_losses)
                self.initial_losses.assign(initial)
                g = tf.math.divide_no_nan(g, initial)
            self.observe_kpi(tf.exp(-g))
        k = tf.clip_by_value(tf.convert_to_tensor(self.kpi_average), self.clip, 1.0 - self.clip)
        w = -tf.pow(1.0 - k, self.gammas) * tf.math.log(k)
        w = tf.where(self.observed > 0, w, tf.ones_like(w))
        return tf.reduce_sum(w * tf.cast(losses, tf.float32)), w

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "kpi": self.kpi,
            "alpha": self.alpha,
            "loss_scale": self.loss_scale,
            "clip": self.clip,
        }
