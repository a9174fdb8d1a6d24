"""PAD-Net: prediction-and-distillation (Xu et al., CVPR 2018).

Xu, Ouyang, Wang and Sebe, "PAD-Net: Multi-Tasks Guided Prediction-and-Distillation Network for
Simultaneous Depth Estimation and Scene Parsing", CVPR 2018; in the form of the survey
(Vandenhende et al., TPAMI 2022, Sec. 3.2.1 and its code):

1. the backbone's levels are fused at the finest resolution (HRNet's fusion: 270 channels at 1/4
   on HRNet-W18) and marked as the shared representation;
2. per task, two bottleneck blocks give task features and a 1x1 conv an *initial prediction*,
   output as ``"{task}/initial"`` and supervised (deep supervision);
3. multi-modal distillation: every task's features receive a spatial-attention-gated message from
   every other task's features (:func:`multimodal_distillation`);
4. per task, two bottleneck blocks and a 1x1 conv give the final prediction, resized to the input.

The distillation runs at the fused resolution with ``channels`` channels for every ordered task
pair, i.e. ``T(T-1)`` pairs of 3x3 convolutions, which makes PAD-Net's cost quadratic in the
number of tasks (see ``docs/decoder_focused.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras

from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.tasks import TaskSpec, resolve

#: decoder options (``head_kwargs``) and their defaults
DEFAULTS = {
    "channels": 256,  # width of the task features (the survey's ``intermediate_channels``)
    "features": blocks.LEVELS,  # pyramid levels fused into the decoder input
    "sync_batchnorm": True,
}


def build_padnet(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "hrnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "hrnet",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    auxiliary_tasks: Iterable[str | TaskSpec] = (),
    name: str = "padnet",
) -> keras.Model:
    """PAD-Net: initial predictions, multi-modal distillation, final predictions.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered backbone name or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        head: must be ``"hrnet"``: PAD-Net builds its own heads.
        head_kwargs: decoder options: ``channels`` (256), ``features`` (the pyramid levels fused
            into the decoder input, default all four; ``["P5"]`` gives the survey's dilated
            ResNet setting), ``sync_batchnorm`` (True).
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        auxiliary_tasks: tasks predicted only initially, as in the survey's NYUD-v2 setting
            (normals and edges): they get an initial prediction (``"{task}/initial"``) and send
            distillation messages, but no final prediction (train with
            ``MultiTaskModel(..., auxiliary_tasks=...)``).
        name: model name.

    Returns:
        A functional model mapping raw images to ``{task: (B, H, W, channels)}`` plus
        ``{"{task}/initial": (B, h, w, channels)}`` at the decoder's resolution, for the tasks
        and the auxiliary tasks.

    Example:
        >>> model = build_padnet(["semseg", "depth"], backbone="resnet10",
        ...                      backbone_kwargs={"width": 8}, image_size=(32, 32),
        ...                      head_kwargs={"channels": 8},
        ...                      task_options={"semseg": {"num_classes": 5}})
        >>> sorted(model.output)
        ['depth', 'depth/initial', 'semseg', 'semseg/initial']
    """
    specs = resolve(tasks, task_options)
    every = {**specs, **blocks.auxiliary_specs(specs, auxiliary_tasks, task_options)}
    opts = blocks.decoder_options("padnet", head, head_kwargs, DEFAULTS)
    width, sync = int(opts["channels"]), {"sync_batchnorm": bool(opts["sync_batchnorm"])}

    image = image_input(image_size)
    shared = blocks.fused_representation(image, backbone, backbone_kwargs, opts["features"], **sync)

    outputs, features = {}, {}
    for t, spec in every.items():
        features[t], outputs[f"{t}/initial"] = blocks.task_prediction(
            shared, width, spec.channels, f"{t}_initial", **sync
        )

    distilled = blocks.multimodal_distillation(features, targets=list(specs))

    for t, spec in specs.items():
        _, y = blocks.task_prediction(distilled[t], width, spec.channels, f"{t}_final", **sync)
        outputs[t] = blocks.to_image(y, image, t)
    return keras.Model(image, mark_task_outputs(outputs, every), name=name)
