"""Multi-Task Attention Network (Liu et al., "End-to-End Multi-Task Learning with Attention",
CVPR 2019), on a ResNet as in the survey (Vandenhende et al., TPAMI 2022).

A shared backbone; every task has an attention module per stage that selects features from the
shared network. At stage ``s`` with output ``u_t`` and ``u_b`` the input of its last residual
block, task ``i`` computes a mask from ``u_b`` (and, after stage 1, its own attended features of
the previous stage) and attends the stage output:

    mask = sigmoid(BN(conv1x1(ReLU(BN(conv1x1([u_b, a_(s-1)]))))))   (C/4 hidden channels)
    a_s = mask * u_t,   then  a_s <- maxpool?(refine_s(a_s))  before the next stage

``refine_s`` is a bottleneck block (to the next stage's channels) shared by the tasks; the 2x2
max-pool is applied when the next stage halves the resolution. Each task's head reads its
attended features (``P2``..``P5`` = ``a_1``..``a_4`` before refinement).

The backbone's ``u_b`` and ``u_t`` tensors are the shared representation; each is marked with
:class:`~mtl_keras.architectures.base.SharedRepresentation` as a *tap* (the backbone continues from
the unmarked tensor), so per-task gradients with respect to the marked tensors count every path
once.

With one-block stages (``resnet10``) ``u_b`` is the stage input; the mask is then computed at
that resolution and max-pooled to the stage output's.

Layer names: the shared backbone is the nested model named like the backbone (as in
hard sharing); ``f"{task}_attention{s}_*"`` per task, ``refine{s}_*`` shared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import keras

from mtl_keras.architectures._blocks import (
    pyramid_heads,
    require_single_branch,
    resolve_backbone,
    stage_layout,
)
from mtl_keras.architectures.base import ImageNormalization, SharedRepresentation, mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.tasks import TaskSpec, resolve

_BN = {"epsilon": 1e-5, "momentum": 0.9}
_PROBE = 64  # input size used to read the resolution of every stage when the input is dynamic


def _block_taps(backbone: keras.Model) -> list[tuple[str, str]]:
    """Per stage 1..4: (layer ending the input of the last block, layer ending the stage)."""
    layout = stage_layout(backbone)
    require_single_branch(layout, "MTAN")
    blocks: dict[int, int] = {}
    for layer in backbone.layers:
        match = re.fullmatch(r"stage(\d)_block(\d+)_out", layer.name)
        if match:
            s, b = int(match[1]), int(match[2])
            blocks[s] = max(blocks.get(s, 0), b)
    if sorted(blocks) != [1, 2, 3, 4]:
        raise ValueError(
            f"MTAN attends the last residual block of each stage and needs a ResNet whose blocks "
            f"are named 'stage{{s}}_block{{b}}_out'; backbone {backbone.name!r} has none. Use "
            "backbone='resnet18' or 'resnet50'."
        )
    taps, previous = [], layout.outputs[0][0] if layout.names[0] == "stem" else None
    for s in range(1, 5):
        last = blocks[s]
        before = f"stage{s}_block{last - 1}_out" if last > 1 else previous
        end = f"stage{s}_block{last}_out"
        taps.append((before, end))
        previous = end
    return taps


class _Refinement:
    """A bottleneck block (shared by the tasks): 1x1, 3x3, 1x1 to ``out_channels`` + projection."""

    def __init__(self, out_channels: int, name: str, sync_batchnorm: bool):
        planes = max(out_channels // 4, 1)

        def bn(suffix):
            return keras.layers.BatchNormalization(
                synchronized=sync_batchnorm, name=f"{name}_{suffix}", **_BN
            )

        def conv(filters, size, suffix):
            return keras.layers.Conv2D(
                filters, size, padding="same", use_bias=False, name=f"{name}_{suffix}"
            )

        self.convs = [
            conv(planes, 1, "conv1"),
            conv(planes, 3, "conv2"),
            conv(out_channels, 1, "conv3"),
        ]
        self.bns = [bn("bn1"), bn("bn2"), bn("bn3")]
        self.relus = [keras.layers.ReLU(name=f"{name}_relu{i}") for i in (1, 2)]
        self.shortcut = (conv(out_channels, 1, "shortcut_conv"), bn("shortcut_bn"))
        self.add = keras.layers.Add(name=f"{name}_add")
        self.out = keras.layers.ReLU(name=f"{name}_out")

    def __call__(self, x):
        y = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            y = bn(conv(y))
            if i < 2:
                y = self.relus[i](y)
        shortcut = self.shortcut[1](self.shortcut[0](x))
        return self.out(self.add([y, shortcut]))


def _attention(x, channels: int, name: str, sync_batchnorm: bool):
    """1x1 conv (C/4) + BN + ReLU + 1x1 conv (C) + BN + sigmoid."""
    for i, filters in enumerate((max(channels // 4, 1), channels), start=1):
        x = keras.layers.Conv2D(filters, 1, name=f"{name}_conv{i}")(x)
        x = keras.layers.BatchNormalization(
            synchronized=sync_batchnorm, name=f"{name}_bn{i}", **_BN
        )(x)
        x = keras.layers.Activation("relu" if i == 1 else "sigmoid", name=f"{name}_act{i}")(x)
    return x


def _halves(shape, reference) -> bool:
    """True when ``shape`` has a higher resolution than ``reference`` (static probe shapes)."""
    return shape[1] > reference[1]


def build_mtan(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "deeplab",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    features: Sequence[str] | None = None,
    sync_batchnorm: bool = True,
    name: str = "mtan",
) -> keras.Model:
    """Shared ResNet with per-task attention modules on every stage; ``{task: output}``.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered ResNet name or a built ResNet.
        backbone_kwargs: arguments of the backbone builder.
        head: ``"deeplab"``, ``"hrnet"`` or ``"conv"``, on the task's attended features.
        head_kwargs: arguments of the head builder.
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories.
        features: pyramid levels given to the heads (default depends on the head).
        sync_batchnorm: synchronise the new layers' batch statistics across replicas.
        name: model name.

    Example:
        >>> model = build_mtan(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head="conv", image_size=(32, 32))
        >>> tuple(model.get_layer("depth_attention2_conv1").kernel.shape)  # [u_b, a_1] -> C/4
        (1, 1, 24, 4)
    """
    specs = resolve(tasks, task_options)
    bb = resolve_backbone(backbone, backbone_kwargs)
    taps = _block_taps(bb)
    names = list(dict.fromkeys(n for pair in taps for n in pair))
    shared = keras.Model(bb.input, [bb.get_layer(n).output for n in names], name=bb.name)

    # static resolutions of every tap, to decide where the attended features are max-pooled
    size = [
        d if d is not None else _PROBE for d in (tuple(image_size) if image_size else (None,) * 2)
    ]
    probe = shared.compute_output_spec(keras.KerasTensor((1, *size, 3)))
    shapes = dict(zip(names, (p.shape for p in probe), strict=True))

    image = image_input(image_size)
    tensors = shared(ImageNormalization(name="normalize")(image))
    marked = {
        n: SharedRepresentation(name=f"shared_{n}")(t) for n, t in zip(names, tensors, strict=True)
    }
    refine = [
        _Refinement(shapes[taps[s + 1][1]][-1], f"refine{s + 1}", sync_batchnorm) for s in range(3)
    ]
    pyramids = {t: {} for t in specs}
    for task in specs:
        previous = None
        for s, (before, end) in enumerate(taps, start=1):
            prefix = f"{task}_attention{s}"
            u_b, u_t = marked[before], marked[end]
            x = u_b
            if previous is not None:
                x = keras.layers.Concatenate(name=f"{prefix}_concat")([u_b, previous])
            mask = _attention(x, shapes[end][-1], prefix, sync_batchnorm)
            if _halves(shapes[before], shapes[end]):
                mask = keras.layers.MaxPooling2D(2, padding="same", name=f"{prefix}_pool")(mask)
            attended = keras.layers.Multiply(name=f"{prefix}_apply")([mask, u_t])
            pyramids[task][f"P{s + 1}"] = attended
            if s < 4:
                previous = refine[s - 1](attended)
                nxt = taps[s][0]
                if _halves(shapes[end], shapes[nxt]):
                    previous = keras.layers.MaxPooling2D(
                        2, padding="same", name=f"{task}_refine{s}_pool"
                    )(previous)
    outputs = pyramid_heads(image, pyramids, specs, head, head_kwargs, features)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
