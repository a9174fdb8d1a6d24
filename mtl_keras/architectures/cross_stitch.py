"""Cross-stitch networks (Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016).

One backbone per task; after chosen stages, a cross-stitch unit replaces every task's features by
a per-channel linear combination of all tasks' features:
``x'_i[..., c] = sum_j a_ij[c] * x_j[..., c]``, initialised to ``a_ii = alpha`` and
``a_ij = beta`` (0.9 / 0.1 in the paper and the survey's NYUD config, 0.8 / 0.05 in its PASCAL
config). As in the survey (Vandenhende et al., TPAMI 2022, Sec. 5) the task columns start from
trained single-task networks (:mod:`mtl_keras.architectures.init_from_single_task`) and the units
learn 100x faster than the rest with SGD (``lr_multiplier``, see
:class:`~mtl_keras.architectures._blocks.ScaledWeight`).

Layer names: the task columns are nested stage models ``f"{task}_{stage}"`` (``semseg_stem``,
``semseg_stage1``, ...) whose layers keep the backbone's names; units are
``cross_stitch_{stage}`` (``..._branch{i}`` per HRNet branch); heads are prefixed by the task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from mtl_keras.architectures._blocks import (
    TaskMixingUnit,
    column_pyramids,
    pyramid_heads,
    require_tasks,
    task_columns,
)
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.tasks import TaskSpec, resolve


@keras.saving.register_keras_serializable(package="mtl_keras")
class CrossStitchUnit(TaskMixingUnit):
    """Per-channel linear mixing of T same-shaped task features.

    Takes a list of T tensors ``(B, H, W, C)`` and returns the list
    ``[sum_j a[i, j] * x_j for i in range(T)]`` with ``a`` of shape ``(T, T, C)``.

    Args:
        alpha: initial weight of a task's own features.
        beta: initial weight of every other task's features.
        lr_multiplier: learning-rate multiplier of ``a`` under SGD (re-parametrisation).

    Example:
        >>> unit = CrossStitchUnit(alpha=0.9, beta=0.1)
        >>> a, b = unit([keras.ops.ones((1, 2, 2, 3)), keras.ops.zeros((1, 2, 2, 3))])
        >>> round(float(a[0, 0, 0, 0]), 6), round(float(b[0, 0, 0, 0]), 6)
        (0.9, 0.1)
    """

    def build(self, input_shape):
        n, c = self.task_channels(input_shape, "cross-stitch")
        init = np.full((n, n, c), self.beta, "float32")
        init[np.arange(n), np.arange(n)] = self.alpha
        self.stitch = self._scaled.add_to(self, init, "stitch")

    def call(self, inputs):
        a = ops.cast(self._scaled(self.stitch), inputs[0].dtype)
        n = len(inputs)
        return [
            ops.sum(ops.stack([a[i, j] * inputs[j] for j in range(n)]), axis=0) for i in range(n)
        ]


def build_cross_stitch(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "deeplab",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    features: Sequence[str] | None = None,
    alpha: float = 0.9,
    beta: float = 0.1,
    stitch_after: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
    lr_multiplier: float = 100.0,
    name: str = "cross_stitch",
) -> keras.Model:
    """One backbone per task, cross-stitch units after ``stitch_after``; ``{task: output}``.

    Args:
        tasks: task names or TaskSpecs (at least two).
        backbone: registered backbone name (built once per task) or a built backbone (cloned
            per task with its weights).
        backbone_kwargs: arguments of the backbone builder.
        head: ``"deeplab"``, ``"hrnet"`` or ``"conv"``; one per task on its own column.
        head_kwargs: arguments of the head builder.
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories.
        features: pyramid levels given to the heads (default depends on the head).
        alpha: initial weight of a task's own features (0.9 in the paper and on NYUD).
        beta: initial weight of the other tasks' features (0.1; PASCAL config 0.05).
        stitch_after: stages followed by a unit (``"stem"``, ``"stage1"``..``"stage4"``); the
            survey stitches after its ``layer1``..``layer4`` (stem included in ``layer1``).
        lr_multiplier: learning-rate multiplier of the units under SGD (survey: 100).
        name: model name.

    Example:
        >>> model = build_cross_stitch(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head="conv", image_size=(32, 32))
        >>> sorted(model.output)
        ['depth', 'semseg']
    """
    specs = resolve(tasks, task_options)
    require_tasks(specs, "cross-stitch")
    image = image_input(image_size)

    def stitch(tag, tensors):
        return CrossStitchUnit(alpha, beta, lr_multiplier, name=f"cross_stitch_{tag}")(tensors)

    layout, per_stage = task_columns(
        specs, backbone, backbone_kwargs, image, stitch_after, stitch, "stitch_after"
    )
    pyramids = column_pyramids(layout, per_stage)
    outputs = pyramid_heads(image, pyramids, specs, head, head_kwargs, features)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
