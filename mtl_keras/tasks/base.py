"""The `TaskSpec`: every fact about a dense prediction task, declared once.

A task is described by a frozen dataclass holding its output channels, its loss, its streaming
metrics with the direction in which each is better, its label encoding and ignore value, how its raw
network output is activated and served, how a trivial baseline predicts it, and how it is drawn.
Nothing outside a TaskSpec switches on a task name: the trainer, the evaluator, the exporter and the
TensorBoard callbacks only call the functions stored here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Tensor = Any


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Declarative description of one dense prediction task.

    Attributes:
        name: canonical task name (e.g. ``"semseg"``); it keys model outputs, labels and logs.
        channels: number of raw output channels the network predicts.
        label_channels: number of channels of the label map (H, W, label_channels).
        label_dtype: numpy/TF dtype name of the stored label.
        loss: ``loss(label, raw_prediction, *, count_mean=identity) -> scalar``, averaged over the
            valid pixels of the batch; ``count_mean`` averages a count over replicas (see
            :mod:`mtl_keras.tasks.losses`).
        metrics: factory returning fresh streaming ``keras.metrics.Metric`` objects; each
            returns a dict of scalars from ``result()``.
        higher_is_better: direction of every reported metric key, e.g. ``{"miou": True}``.
        primary_metric: the metric key used in Δ_MTL and model selection.
        activate: maps the raw prediction to the quantity the metrics consume (probabilities,
            unit normals, metric depth).
        serve: maps the raw prediction (already at the output size) to the named serving outputs.
        interpolation: how a label map of this task is resized (``"nearest"`` or ``"bilinear"``).
        ignore_value: label value meaning "do not supervise", or None (depth/normals use 0).
        num_classes: class count for classification tasks, else None.
        class_names: optional names of the classes.
        baseline: ``baseline(train_labels) -> constant raw prediction of shape (channels,)``: the
            trivial predictor fitted on training labels (majority class, mean depth, ...).
        colorize: ``colorize(array (H, W, C)) -> uint8 (H, W, 3)`` for labels and activated
            predictions alike.
        options: the keyword arguments of the registered factory that built this spec
            (``tasks.get(name, **options)``): with ``name`` they are the spec's config, from which
            a saved model rebuilds it (:meth:`get_config`, ``tasks.from_config``).
    """

    name: str
    channels: int
    label_channels: int
    label_dtype: str
    loss: Callable[[Tensor, Tensor], Tensor]
    metrics: Callable[[], list]
    higher_is_better: Mapping[str, bool]
    primary_metric: str
    activate: Callable[[Tensor], Tensor]
    serve: Callable[[Tensor], dict[str, Tensor]]
    interpolation: str
    ignore_value: int | None
    baseline: Callable[[np.ndarray], np.ndarray]
    colorize: Callable[[np.ndarray], np.ndarray]
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def get_config(self) -> dict:
        """``{"name": ..., "options": {...}}``: what ``tasks.from_config`` rebuilds it from."""
        return {"name": self.name, "options": _plain(self.options)}

    def metric_id(self, key: str) -> str:
        """The flat log key of one metric of this task, e.g. ``"semseg_miou"``."""
        return f"{self.name}_{key}"

    def directions(self) -> dict[str, bool]:
        """``{metric_id: higher_is_better}`` over all metrics of this task."""
        return {self.metric_id(k): v for k, v in self.higher_is_better.items()}


def _plain(value):
    """JSON-friendly copy of factory options (tuples become lists, numbers stay numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
