"""JTRL: joint task-recursive learning (Zhang et al., ECCV 2018).

Zhang, Cui, Xu, Jie, Li and Yang, "Joint Task-Recursive Learning for Semantic Segmentation and
Depth Estimation", ECCV 2018; the survey's Sec. 3.2.3. The tasks' states are refined alternately,
one task at a time, along a coarse-to-fine sequence of scales (the backbone's levels, coarsest
first):

* at every scale each task in turn computes its new *state*: a task-attentional module (TAM)
  combines the task's own previous state (from the coarser scale, upsampled) with the most recent
  state of the task before it in the sequence; the result, concatenated with the task's lateral
  projection of the backbone level (the "previous experiences"), goes through a basic block;
* every state but the last is decoded by a 1x1 conv into ``"{task}/scale_{k}"`` (deep
  supervision; ``k = 0`` is the finest scale); the last state gives the final prediction.

The TAM (paper Sec. 3.2): a *balance unit* gates the two inputs ``a`` (own state) and ``b``
(other task) with ``g = sigmoid(conv1x1([a, b]))`` into ``conv3x3(g a + (1 - g) b)``; a
conv-deconv branch (stride-2 conv, stride-2 transposed conv) turns that into a spatial attention
``s = sigmoid(.)``; the output is ``conv1x1([a (1 + s), b (1 + s)])``.

The paper alternates two tasks (depth, semseg). With more tasks the same rule applies round-robin:
each task attends to the latest state of the task before it. The first step, which has no
previous state, uses lateral projections of the coarsest level instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras

from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve

#: decoder options (``head_kwargs``) and their defaults
DEFAULTS = {
    "channels": 128,  # width of every task state
    "features": blocks.LEVELS,  # pyramid levels, finest first; one scale per level
    "sync_batchnorm": True,
}


def task_attention(a, b, channels: int, name: str, *, sync_batchnorm: bool = True):
    """JTRL's task-attentional module on two ``(B, h, w, channels)`` states (layers ``name_*``)."""
    sync = {"sync_batchnorm": sync_batchnorm}
    both = keras.layers.Concatenate(name=f"{name}_concat")([a, b])
    gate = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_balance_gate")(both)
    ga = keras.layers.Multiply(name=f"{name}_gate_a")([gate, a])
    gb = keras.layers.Multiply(name=f"{name}_gate_b")([gate, b])
    # g a + (1 - g) b = g a + b - g b
    balanced = keras.layers.Add(name=f"{name}_balanced")(
        [ga, keras.layers.Subtract(name=f"{name}_rest_b")([b, gb])]
    )
    balanced = blocks.conv_bn(balanced, channels, 3, f"{name}_balance", **sync)
    s = blocks.conv_bn(balanced, channels, 3, f"{name}_down", stride=2, **sync)
    s = keras.layers.Conv2DTranspose(channels, 3, strides=2, padding="same", name=f"{name}_up")(s)
    s = ResizeLike(name=f"{name}_up_resize")([s, balanced])  # odd sizes
    s = keras.layers.Activation("sigmoid", name=f"{name}_attention")(s)
    attended = [
        keras.layers.Add(name=f"{name}_attend_{k}")(
            [x, keras.layers.Multiply(name=f"{name}_attention_{k}")([s, x])]
        )
        for k, x in (("a", a), ("b", b))
    ]
    both = keras.layers.Concatenate(name=f"{name}_attended")(attended)
    return blocks.conv_bn(both, channels, 1, f"{name}_out", **sync)


def build_jtrl(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "hrnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "hrnet",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    name: str = "jtrl",
) -> keras.Model:
    """JTRL: task states refined alternately through task-attentional modules, coarse to fine.

    Args:
        tasks: task names or TaskSpecs, in the order their states are refined.
        backbone: registered backbone name or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        head: must be ``"hrnet"``: JTRL builds its own heads.
        head_kwargs: decoder options: ``channels`` (128), ``features`` (pyramid levels, finest
            first; default ``P2..P5``), ``sync_batchnorm`` (True).
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        name: model name.

    Returns:
        A functional model mapping raw images to ``{task: (B, H, W, channels)}`` plus
        ``{"{task}/scale_{k}": (B, h_k, w_k, channels)}`` for every scale but the finest.

    Example:
        >>> model = build_jtrl(["semseg", "depth"], backbone="resnet10",
        ...                    backbone_kwargs={"width": 8}, image_size=(64, 64),
        ...                    head_kwargs={"channels": 8},
        ...                    task_options={"semseg": {"num_classes": 5}})
        >>> sorted(k for k in model.output if k.startswith("depth"))
        ['depth', 'depth/scale_1', 'depth/scale_2', 'depth/scale_3']
    """
    specs = resolve(tasks, task_options)
    opts = blocks.decoder_options("jtrl", head, head_kwargs, DEFAULTS)
    width, sync = int(opts["channels"]), {"sync_batchnorm": bool(opts["sync_batchnorm"])}
    names = list(opts["features"])

    image = image_input(image_size)
    levels = blocks.encode(image, backbone, backbone_kwargs, names)
    levels = [blocks.mark(x, n) for x, n in zip(levels, names)]

    order = list(specs)
    outputs, states = {}, {}
    latest = None  # the most recent state of any task
    for k in range(len(levels) - 1, -1, -1):  # coarsest to finest
        level = levels[k]
        lateral = {t: blocks.conv_bn(level, width, 1, f"{t}_s{k}_lateral", **sync) for t in order}
        for i, t in enumerate(order):
            own = states.get(t)
            own = lateral[t] if own is None else ResizeLike(name=f"{t}_s{k}_own")([own, level])
            other = lateral[order[i - 1]] if latest is None else latest
            if other.shape[1:3] != level.shape[1:3] or None in level.shape[1:3]:
                other = ResizeLike(name=f"{t}_s{k}_other")([other, level])
            x = task_attention(own, other, width, f"{t}_s{k}_tam", **sync)
            x = keras.layers.Concatenate(name=f"{t}_s{k}_experience")([x, lateral[t]])
            states[t] = latest = blocks.basic_block(x, width, f"{t}_s{k}_state", **sync)
            if k > 0:
                outputs[f"{t}/scale_{k}"] = blocks.classifier(
                    states[t], specs[t].channels, f"{t}_s{k}"
                )

    for t, spec in specs.items():
        x = blocks.classifier(states[t], spec.channels, f"{t}_final")
        outputs[t] = blocks.to_image(x, image, t)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
