"""Multi-task DPT: one dense-prediction-transformer decoder per task on a shared encoder.

Ranftl, Bochkovskiy and Koltun, "Vision Transformers for Dense Prediction", ICCV 2021 (the decoder
of keras-hub's DepthAnything). DPT reads four transformer layers (3/6/9/12 of ViT-B, 5/11/17/23
of ViT-L), *reassembles* their tokens into maps at strides 4, 8, 16 and 32 (projection and
resampling; reassemble widths 96/192/384/768 on ViT-B, 256/512/1024/1024 on ViT-L) and *fuses*
them coarse to fine with residual convolution units (RCU), then a head (3x3 conv to
``features/2``, 2x upsampling, 3x3 conv to 32, ReLU, 1x1 conv). ``features`` is 256.

Here the reassembly's resampling is the encoder's pyramid
(:class:`~mtl_keras.backbones.keras_hub.KerasHubEncoder` builds it for ViT, DINOv2 and DINOv3),
shared by the tasks and marked as the shared representation; every task then has its own 3x3
projections of the four levels (DPT's ``layer_rn``), fusion blocks and head. On a CNN pyramid
(ResNet, HRNet, keras-hub CNNs) this is DPT-Hybrid's decoder. The multi-task form (shared
encoder, task decoders with no interaction) is the transformer-era hard-sharing baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras

from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures import _transformer_blocks as tblocks
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve

#: decoder options (``head_kwargs``) and their defaults
DEFAULTS = {
    "features": 256,  # DPT's fusion width; None: a quarter of the coarsest level's channels
    "levels": blocks.LEVELS,  # pyramid levels, finest first
    "head_channels": 32,  # width of the head's last 3x3 convolution
}


def residual_conv_unit(x, name: str):
    """DPT's RCU: ``x + conv3x3(relu(conv3x3(relu(x))))`` (convolutions with bias, no BN)."""
    width = x.shape[-1]
    y = keras.layers.ReLU(name=f"{name}_relu1")(x)
    y = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv2")(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def fusion_block(path, skip, target, name: str):
    """DPT's feature fusion: ``path + RCU(skip)``, RCU, resize to ``target``, 1x1 projection."""
    x = (
        skip
        if path is None
        else keras.layers.Add(name=f"{name}_merge")(
            [path, residual_conv_unit(skip, f"{name}_rcu1")]
        )
    )
    x = residual_conv_unit(x, f"{name}_rcu2")
    if target is not None:
        x = ResizeLike(name=f"{name}_up")([x, target])
    return keras.layers.Conv2D(x.shape[-1], 1, name=f"{name}_out")(x)


def build_dpt(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "dpt",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    name: str = "dpt",
) -> keras.Model:
    """Shared encoder, one DPT decoder (projections, fusion, head) per task.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered backbone name (``"keras_hub.ViTBackbone"``, ``"preset:<dir>"``,
            ``"resnet50"``, ...) or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        head: ``"dpt"`` (or ``"hrnet"``, the recipes' default): DPT builds its own heads.
        head_kwargs: decoder options: ``features`` (256), ``levels`` (``P2..P5``),
            ``head_channels`` (32).
        image_size: ``(H, W)`` of the input (ViT-family encoders need it), or None.
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        name: model name.

    Returns:
        A functional model mapping raw images to ``{task: (B, H, W, channels)}``.

    Example:
        >>> model = build_dpt(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head_kwargs={"features": 8},
        ...     image_size=(32, 32), task_options={"semseg": {"num_classes": 5}})
        >>> sorted(model.output)
        ['depth', 'semseg']
    """
    specs = resolve(tasks, task_options)
    opts = tblocks.transformer_options("dpt", head, head_kwargs, DEFAULTS)
    image = image_input(image_size)
    levels = tblocks.encode_levels("dpt", image, backbone, backbone_kwargs, opts["levels"])
    width = tblocks.scaled(opts["features"], levels[-1].shape[-1], 0.25)

    outputs = {}
    for t, spec in specs.items():
        projected = [
            keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{t}_rn{k}")(x)
            for k, x in enumerate(levels)
        ]
        path = None
        for k in range(len(projected) - 1, -1, -1):  # coarsest to finest
            target = projected[k - 1] if k > 0 else None
            path = fusion_block(path, projected[k], target, f"{t}_fusion{k}")
        x = keras.layers.Conv2D(width // 2 or 1, 3, padding="same", name=f"{t}_head_conv1")(path)
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{t}_head_up")(x)
        x = keras.layers.Conv2D(
            int(opts["head_channels"]), 3, padding="same", name=f"{t}_head_conv2"
        )(x)
        x = keras.layers.ReLU(name=f"{t}_head_relu")(x)
        x = keras.layers.Conv2D(spec.channels, 1, name=f"{t}_head_out")(x)
        outputs[t] = blocks.to_image(x, image, t)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
