"""MTI-Net: multi-scale task interaction networks (Vandenhende et al., ECCV 2020).

Vandenhende, Georgoulis and Van Gool, "MTI-Net: Multi-Scale Task Interaction Networks for
Multi-Task Learning", ECCV 2020; the survey's Sec. 3.2.4. From the coarsest pyramid level to the
finest:

1. *initial predictions at every scale*: per task two basic blocks on the level's features
   (concatenated, below the coarsest scale, with the task's features propagated from the coarser
   scale) and a 1x1 conv, output as ``"{task}/scale_{k}"`` (``k = 0`` is the finest) and supervised;
2. the *feature propagation module* (FPM) carries the task features of scale ``k`` to scale
   ``k - 1``: the concatenated task features go through a non-linear function whose output, split
   per task, is normalised by a softmax across tasks into per-task attention masks; the attended
   features are reduced to one scale's width and every task takes its own squeeze-and-excitation
   view of them, added to its features;
3. *multi-modal distillation* (PAD-Net's, :func:`multimodal_distillation`) at every scale;
4. *feature aggregation*: per task, the HRNet head over the distilled features of all scales.

The survey's code supports HRNet only; here the levels of any backbone work: HRNet's are used as
they are, other backbones' (ResNets) first pass through a small feature pyramid
(:func:`~mtl_keras.architectures._decoder_blocks.fpn_neck`) that gives every level ``fpn_channels``
channels. The levels are resized to each other's sizes, so dilated ResNets (equal strides) work too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras
import tensorflow as tf

from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.heads.simple import ResizeLike, hrnet_head
from mtl_keras.tasks import TaskSpec, resolve

NECKS = ("auto", "fpn", "none")
#: decoder options (``head_kwargs``) and their defaults
DEFAULTS = {
    "features": blocks.LEVELS,  # pyramid levels, finest first; one scale per level
    "neck": "auto",  # "auto": none on HRNet, a feature pyramid on other backbones
    "fpn_channels": 64,
    "sync_batchnorm": True,
}


@keras.saving.register_keras_serializable(package="mtl_keras")
class TaskSoftmax(keras.layers.Layer):
    """Softmax across tasks of per-task logits stacked on the channel axis.

    The input ``(B, H, W, T * C)`` holds task ``i``'s logits in channels ``[i*C, (i+1)*C)``; the
    output has the same layout and sums to 1 over the ``T`` tasks at every pixel and channel.

    Example:
        >>> x = keras.ops.zeros((1, 2, 2, 6))
        >>> float(TaskSoftmax(3)(x)[0, 0, 0, 0])  # doctest: +ELLIPSIS
        0.333...
    """

    def __init__(self, num_tasks: int, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)

    def call(self, x):
        t, c = self.num_tasks, x.shape[-1] // self.num_tasks
        shape = tf.shape(x)
        split = tf.reshape(x, tf.concat([shape[:-1], [t, c]], 0))
        return tf.reshape(tf.nn.softmax(split, axis=-2), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks}


def feature_propagation(features: Mapping, scale: int, *, sync_batchnorm: bool = True) -> dict:
    """MTI-Net's feature propagation module at ``scale`` (layers ``fpm{scale}_*``).

    Args:
        features: ``{task: (B, h, w, C)}`` task features of one scale.
        scale: the scale index, used in layer names.
        sync_batchnorm: synchronise batch statistics across replicas.

    Returns:
        ``{task: (B, h, w, C)}``: each task's features plus its squeeze-and-excitation view of the
        task-attended shared features.
    """
    sync = {"sync_batchnorm": sync_batchnorm}
    tasks = list(features)
    width = features[tasks[0]].shape[-1]
    concat = (
        keras.layers.Concatenate(name=f"fpm{scale}_concat")([features[t] for t in tasks])
        if len(tasks) > 1
        else features[tasks[0]]
    )
    total = concat.shape[-1]
    x = blocks.basic_block(concat, max(total // 4, 1), f"fpm{scale}_nonlinear1", **sync)
    x = blocks.basic_block(x, max(total // 4, 1), f"fpm{scale}_nonlinear2", **sync)
    logits = keras.layers.Conv2D(total, 1, name=f"fpm{scale}_nonlinear_out")(x)
    mask = TaskSoftmax(len(tasks), name=f"fpm{scale}_task_softmax")(logits)
    attended = keras.layers.Multiply(name=f"fpm{scale}_attend")([mask, concat])
    shared = blocks.basic_block(attended, width, f"fpm{scale}_reduce", **sync)
    return {
        t: keras.layers.Add(name=f"{t}_fpm{scale}_out")(
            [blocks.squeeze_excitation(shared, f"{t}_fpm{scale}_se"), features[t]]
        )
        for t in tasks
    }


def build_mtinet(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "hrnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "hrnet",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    auxiliary_tasks: Iterable[str | TaskSpec] = (),
    name: str = "mtinet",
) -> keras.Model:
    """MTI-Net: multi-scale initial predictions, FPM, per-scale distillation, aggregation.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered backbone name or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        head: must be ``"hrnet"``: the feature aggregation is the HRNet head.
        head_kwargs: decoder options: ``features`` (pyramid levels, finest first; default
            ``P2..P5``), ``neck`` (``"auto"``: none on HRNet backbones, ``"fpn"`` otherwise;
            ``"fpn"`` or ``"none"`` force it), ``fpn_channels`` (64), ``sync_batchnorm`` (True).
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        auxiliary_tasks: tasks predicted only at the scales, as in the survey's NYUD-v2 setting
            (normals and edges): they get per-scale predictions (``"{task}/scale_{k}"``), take
            part in feature propagation and send distillation messages, but have no final
            prediction (train with ``MultiTaskModel(..., auxiliary_tasks=...)``).
        name: model name.

    Returns:
        A functional model mapping raw images to ``{task: (B, H, W, channels)}`` plus
        ``{"{task}/scale_{k}": (B, h_k, w_k, channels)}`` for every scale ``k`` (0 = finest), for
        the tasks and the auxiliary tasks.

    Example:
        >>> model = build_mtinet(["semseg", "depth"], backbone="resnet10",
        ...                      backbone_kwargs={"width": 8}, image_size=(64, 64),
        ...                      head_kwargs={"fpn_channels": 8},
        ...                      task_options={"semseg": {"num_classes": 5}})
        >>> sorted(k for k in model.output if k.startswith("depth"))
        ['depth', 'depth/scale_0', 'depth/scale_1', 'depth/scale_2', 'depth/scale_3']
    """
    specs = resolve(tasks, task_options)
    every = {**specs, **blocks.auxiliary_specs(specs, auxiliary_tasks, task_options)}
    opts = blocks.decoder_options("mtinet", head, head_kwargs, DEFAULTS)
    if opts["neck"] not in NECKS:
        raise ValueError(f"mtinet: unknown neck {opts['neck']!r}; valid: {', '.join(NECKS)}")
    sync = {"sync_batchnorm": bool(opts["sync_batchnorm"])}
    names = list(opts["features"])

    image = image_input(image_size)
    levels = blocks.encode(image, backbone, backbone_kwargs, names)
    neck = opts["neck"]
    if neck == "fpn" or (neck == "auto" and not blocks.is_hrnet(backbone)):
        levels = blocks.fpn_neck(levels, int(opts["fpn_channels"]), **sync)
    levels = [blocks.mark(x, n) for x, n in zip(levels, names)]

    outputs, per_scale = {}, {}
    propagated = None
    for k in range(len(levels) - 1, -1, -1):  # coarsest to finest
        level, width = levels[k], levels[k].shape[-1]
        feats = {}
        for t, spec in every.items():
            x = level
            if propagated is not None:
                up = ResizeLike(name=f"{t}_s{k}_propagate")([propagated[t], level])
                x = keras.layers.Concatenate(name=f"{t}_s{k}_concat")([level, up])
            feats[t], outputs[f"{t}/scale_{k}"] = blocks.task_prediction(
                x, width, spec.channels, f"{t}_s{k}", block=blocks.basic_block, **sync
            )
        if k > 0:
            propagated = feature_propagation(feats, k, **sync)
        per_scale[k] = blocks.multimodal_distillation(feats, suffix=f"_s{k}", targets=list(specs))

    for t, spec in specs.items():
        scales = [per_scale[k][t] for k in range(len(levels))]
        x = hrnet_head(scales, spec.channels, name=f"{t}_aggregate", **sync)
        outputs[t] = blocks.to_image(x, image, t)
    return keras.Model(image, mark_task_outputs(outputs, every), name=name)
