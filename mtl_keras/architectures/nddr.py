"""NDDR-CNN (Gao et al., "NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by Neural
Discriminative Dimensionality Reduction", CVPR 2019).

One backbone per task; after every stage the task features are concatenated
(``T * C`` channels) and each task takes its own 1x1 convolution back to ``C`` channels, then
batch normalisation and ReLU. The convolution starts as a weighted identity: ``alpha * I`` on the
task's own block and ``beta * I`` on every other task's block (0.9 / 0.1 on NYUD, 0.8 / 0.05 on
PASCAL in the survey's configs). As in the survey (Vandenhende et al., TPAMI 2022), NDDR layers
follow the stem and each of the four stages, BN uses PyTorch momentum 0.05 (Keras 0.95), the task
columns start from trained single-task networks, and the fusion kernels learn 100x faster under
SGD (``lr_multiplier``).

Layer names: task columns ``f"{task}_{stage}"`` (nested stage models), fusion
``nddr_{stage}`` (``..._branch{i}`` per HRNet branch) with per-task ``nddr_{stage}_{task}_bn``
and ``_relu``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from mtl_keras.architectures._blocks import (
    STAGES,
    TaskMixingUnit,
    column_pyramids,
    pyramid_heads,
    require_tasks,
    task_columns,
)
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.tasks import TaskSpec, resolve

_BN_MOMENTUM = 0.95  # PyTorch momentum 0.05, as the NDDR-CNN code and the survey
_BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="mtl_keras")
class NDDRFusion(TaskMixingUnit):
    """The T bias-free 1x1 convolutions of an NDDR layer, from ``concat(x_1..x_T)`` to each task.

    Takes a list of T tensors ``(B, H, W, C)``; returns T tensors ``(B, H, W, C)``:
    ``y_i = concat_j(x_j) @ K_i`` with ``K_i`` of shape ``(T * C, C)``, initialised to ``alpha * I``
    on block ``i`` and ``beta * I`` on the other blocks.

    Args:
        alpha: initial diagonal weight of a task's own features.
        beta: initial diagonal weight of the other tasks' features.
        lr_multiplier: learning-rate multiplier of the kernels under SGD (re-parametrisation).

    Example:
        >>> ones, zeros = keras.ops.ones((1, 1, 1, 2)), keras.ops.zeros((1, 1, 1, 2))
        >>> y1, y2 = NDDRFusion(0.9, 0.1)([ones, zeros])
        >>> [[round(float(v), 6) for v in keras.ops.convert_to_numpy(y).ravel()] for y in (y1, y2)]
        [[0.9, 0.9], [0.1, 0.1]]
    """

    def build(self, input_shape):
        n, c = self.task_channels(input_shape, "NDDR")
        init = np.zeros((n, n * c, c), "float32")
        for i in range(n):
            for j in range(n):
                init[i, j * c : (j + 1) * c] = np.eye(c) * (self.alpha if i == j else self.beta)
        self.kernel = self._scaled.add_to(self, init, "kernel")

    def call(self, inputs):
        x = ops.concatenate(list(inputs), axis=-1)
        kernel = ops.cast(self._scaled(self.kernel), x.dtype)
        return [ops.matmul(x, kernel[i]) for i in range(len(inputs))]


def build_nddr(
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
    fuse_after: Sequence[str] = STAGES,
    lr_multiplier: float = 100.0,
    sync_batchnorm: bool = True,
    name: str = "nddr_cnn",
) -> keras.Model:
    """One backbone per task with NDDR layers after ``fuse_after``; ``{task: output}``.

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
        alpha: initial diagonal weight of a task's own features.
        beta: initial diagonal weight of the other tasks' features.
        fuse_after: stages followed by an NDDR layer (default: stem and all four stages).
        lr_multiplier: learning-rate multiplier of the fusion kernels under SGD (survey: 100).
        sync_batchnorm: synchronise the NDDR batch statistics across replicas.
        name: model name.

    Example:
        >>> model = build_nddr(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head="conv", image_size=(32, 32))
        >>> tuple(model.get_layer("nddr_stage4").kernel.shape)
        (2, 128, 64)
    """
    specs = resolve(tasks, task_options)
    require_tasks(specs, "NDDR-CNN")
    image = image_input(image_size)

    def fuse(tag, tensors):
        fused = NDDRFusion(alpha, beta, lr_multiplier, name=f"nddr_{tag}")(tensors)
        out = []
        for task, y in zip(specs, fused, strict=True):
            y = keras.layers.BatchNormalization(
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                synchronized=sync_batchnorm,
                name=f"nddr_{tag}_{task}_bn",
            )(y)
            out.append(keras.layers.ReLU(name=f"nddr_{tag}_{task}_relu")(y))
        return out

    layout, per_stage = task_columns(
        specs, backbone, backbone_kwargs, image, fuse_after, fuse, "fuse_after"
    )
    pyramids = column_pyramids(layout, per_stage)
    outputs = pyramid_heads(image, pyramids, specs, head, head_kwargs, features)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
