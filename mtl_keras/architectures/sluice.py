"""Sluice networks (Ruder et al., "Latent Multi-task Architecture Learning", AAAI 2019).

A generalisation of cross-stitch networks with three learned components, here on one backbone per
task:

* **subspaces and alpha units**: every task's stage output is split into ``K`` channel groups
  (subspaces, ``K = 2`` in the paper); after chosen stages an alpha unit mixes all ``T * K``
  subspaces with a learned ``(T K) x (T K)`` matrix (one scalar per pair of subspaces):
  ``x'_(i,k) = sum_(j,l) alpha[(i,k), (j,l)] x_(j,l)``. Initialisation: ``self_weight`` on the
  diagonal, the rest of each row ``(1 - self_weight) / (T K - 1)`` (rows sum to one).
* **orthogonality** of the subspaces of a task, as a penalty
  ``weight * sum_t sum_(k<l) ||X_(t,k)^T X_(t,l) / N||_F^2`` over the ``N`` pixels of the batch,
  added with ``add_loss`` (it reaches training only if the trainer adds the network's
  ``losses`` to its objective).
* **beta units** (layer-wise skip connections): each task's head reads a learned combination
  ``sum_s beta_s h_s`` of its column's stage outputs, initialised to 0.9 for the last stage and
  ``0.1 / (S - 1)`` for the others. Convolutional stages differ in channels and resolution, so
  every earlier stage output first goes through a task-specific bias-free 1x1 convolution to the
  last stage's channels and is resized (bilinear) to its resolution; the paper's recurrent
  layers needed no such projection.

The survey (Vandenhende et al., TPAMI 2022) discusses sluice networks but does not benchmark
them; the other settings follow its cross-stitch recipe (``lr_multiplier`` for the alpha and beta
units under SGD). Backbones with parallel branches (HRNet) are not supported.

Layer names: columns ``f"{task}_{stage}"``; alpha units ``sluice_{stage}``; projections
``f"{task}_skip_{stage}_conv"`` / ``_resize``; beta units ``f"{task}_layer_stitch"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras
import numpy as np
from keras import ops

from mtl_keras.architectures._blocks import (
    ScaledWeight,
    column_pyramids,
    pyramid_heads,
    replica_sum,
    require_single_branch,
    require_tasks,
    task_columns,
)
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve


@keras.saving.register_keras_serializable(package="mtl_keras")
class SluiceUnit(keras.layers.Layer):
    """Alpha unit: mix the ``T * K`` channel subspaces of T task features.

    Args:
        subspaces: ``K``, the number of channel groups per task (the channels must divide).
        self_weight: initial diagonal of alpha; the rest of a row shares ``1 - self_weight``.
        orthogonality: weight of the subspace orthogonality penalty (``add_loss``); 0 = none.
        lr_multiplier: learning-rate multiplier of alpha under SGD (re-parametrisation).

    Example:
        >>> unit = SluiceUnit(subspaces=2, self_weight=1.0)  # identity at initialisation
        >>> x = keras.ops.reshape(keras.ops.arange(4.0), (1, 1, 1, 4))
        >>> keras.ops.convert_to_numpy(unit([x, x])[0]).ravel().tolist()
        [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(
        self,
        subspaces: int = 2,
        self_weight: float = 0.9,
        orthogonality: float = 0.0,
        lr_multiplier: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.subspaces, self.self_weight = int(subspaces), float(self_weight)
        self.orthogonality, self.lr_multiplier = float(orthogonality), float(lr_multiplier)
        self._scaled = ScaledWeight(self.lr_multiplier)

    def build(self, input_shape):
        shapes = list(input_shape)
        channels = {tuple(s)[-1] for s in shapes}
        if len(channels) != 1 or next(iter(channels)) % self.subspaces:
            raise ValueError(
                f"sluice inputs need equal channels divisible by subspaces={self.subspaces}, "
                f"got shapes {shapes}"
            )
        m = len(shapes) * self.subspaces
        init = np.full((m, m), (1.0 - self.self_weight) / max(m - 1, 1), "float32")
        np.fill_diagonal(init, self.self_weight)
        self.alpha = self._scaled.add_to(self, init, "alpha")

    def _orthogonality_penalty(self, groups):
        penalty = 0.0
        for parts in groups:
            flat = [ops.reshape(p, (-1, p.shape[-1])) for p in parts]
            # Gram matrices of the global batch, on every replica (``replica_sum``)
            n = replica_sum(ops.cast(ops.shape(flat[0])[0], flat[0].dtype))
            for k in range(len(flat)):
                for m in range(k + 1, len(flat)):
                    gram = replica_sum(ops.matmul(ops.transpose(flat[k]), flat[m])) / n
                    penalty = penalty + ops.sum(ops.square(gram))
        return penalty

    def call(self, inputs):
        k = self.subspaces
        groups = [ops.split(x, k, axis=-1) for x in inputs]
        if self.orthogonality:
            self.add_loss(self.orthogonality * self._orthogonality_penalty(groups))
        parts = [p for g in groups for p in g]
        alpha = ops.cast(self._scaled(self.alpha), parts[0].dtype)
        mixed = [
            ops.sum(ops.stack([alpha[r, s] * parts[s] for s in range(len(parts))]), axis=0)
            for r in range(len(parts))
        ]
        return [ops.concatenate(mixed[i * k : (i + 1) * k], axis=-1) for i in range(len(inputs))]

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "subspaces": self.subspaces,
            "self_weight": self.self_weight,
            "orthogonality": self.orthogonality,
            "lr_multiplier": self.lr_multiplier,
        }


@keras.saving.register_keras_serializable(package="mtl_keras")
class LayerStitch(keras.layers.Layer):
    """Beta unit: ``sum_s beta_s h_s`` over S same-shaped layer outputs of one task.

    Args:
        last_weight: initial beta of the last layer; the others share ``1 - last_weight``.
        lr_multiplier: learning-rate multiplier of beta under SGD (re-parametrisation).

    Example:
        >>> out = LayerStitch(last_weight=0.9)([keras.ops.ones((1, 1)), keras.ops.zeros((1, 1))])
        >>> round(float(out[0, 0]), 6)
        0.1
    """

    def __init__(self, last_weight: float = 0.9, lr_multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.last_weight, self.lr_multiplier = float(last_weight), float(lr_multiplier)
        self._scaled = ScaledWeight(self.lr_multiplier)

    def build(self, input_shape):
        n = len(list(input_shape))
        init = np.full((n,), (1.0 - self.last_weight) / max(n - 1, 1), "float32")
        init[-1] = self.last_weight if n > 1 else 1.0
        self.beta = self._scaled.add_to(self, init, "beta")

    def call(self, inputs):
        beta = ops.cast(self._scaled(self.beta), inputs[0].dtype)
        return ops.sum(ops.stack([beta[s] * x for s, x in enumerate(inputs)]), axis=0)

    def compute_output_shape(self, input_shape):
        return tuple(list(input_shape)[0])

    def get_config(self):
        return {
            **super().get_config(),
            "last_weight": self.last_weight,
            "lr_multiplier": self.lr_multiplier,
        }


def build_sluice(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "deeplab",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    features: Sequence[str] | None = None,
    subspaces: int = 2,
    self_weight: float = 0.9,
    orthogonality: float = 0.0,
    mix_after: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
    skip_from: Sequence[str] = ("stage1", "stage2", "stage3", "stage4"),
    lr_multiplier: float = 100.0,
    name: str = "sluice",
) -> keras.Model:
    """One ResNet per task with alpha units after ``mix_after`` and beta units over ``skip_from``.

    The heads read ``P5`` = the beta combination and ``P2``..``P4`` = the (mixed) stage outputs.

    Args:
        tasks: task names or TaskSpecs (at least two).
        backbone: registered backbone name or a built backbone (a ResNet).
        backbone_kwargs: arguments of the backbone builder.
        head: ``"deeplab"``, ``"hrnet"`` or ``"conv"``.
        head_kwargs: arguments of the head builder.
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories.
        features: pyramid levels given to the heads (default depends on the head).
        subspaces: channel groups per task in the alpha units.
        self_weight: initial diagonal of alpha.
        orthogonality: weight of the subspace orthogonality penalty (0 = off).
        mix_after: stages followed by an alpha unit.
        skip_from: stages combined by the beta units (the last stage must be among them).
        lr_multiplier: learning-rate multiplier of alpha and beta under SGD.
        name: model name.

    Example:
        >>> model = build_sluice(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head="conv", image_size=(32, 32))
        >>> tuple(model.get_layer("sluice_stage1").alpha.shape)
        (4, 4)
    """
    specs = resolve(tasks, task_options)
    require_tasks(specs, "sluice")
    image = image_input(image_size)

    def mix(tag, tensors):
        unit = SluiceUnit(
            subspaces, self_weight, orthogonality, lr_multiplier, name=f"sluice_{tag}"
        )
        return unit(tensors)

    layout, per_stage = task_columns(
        specs, backbone, backbone_kwargs, image, mix_after, mix, "mix_after"
    )
    require_single_branch(layout, "sluice")
    last = layout.names[-1]
    if last not in skip_from or any(s not in layout.names for s in skip_from):
        raise ValueError(
            f"skip_from must list stages of {list(layout.names)} including the last one "
            f"({last!r}), got {list(skip_from)}"
        )
    pyramids = column_pyramids(layout, per_stage)
    for task in specs:
        outs = {stage: per_stage[task][k][0] for k, stage in enumerate(layout.names)}
        reference = outs[last]
        layers = []
        for stage in (s for s in layout.names if s in skip_from):
            h = outs[stage]
            if stage != last:
                h = keras.layers.Conv2D(
                    reference.shape[-1], 1, use_bias=False, name=f"{task}_skip_{stage}_conv"
                )(h)
                h = ResizeLike(name=f"{task}_skip_{stage}_resize")([h, reference])
            layers.append(h)
        stitched = LayerStitch(0.9, lr_multiplier, name=f"{task}_layer_stitch")(layers)
        pyramids[task][max(layout.pyramid)] = stitched
    outputs = pyramid_heads(image, pyramids, specs, head, head_kwargs, features)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
