"""Blocks shared by the decoder-focused architectures (PAD-Net, MTI-Net, PAP-Net, JTRL).

Decoder-focused networks (Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A
Survey", TPAMI 2022, Sec. 3.2) first predict every task from the shared features, then let those
initial predictions refine each other. Their builders share:

* :func:`decoder_options`: the decoder's options come in through ``head_kwargs`` (for these
  architectures the task heads *are* the decoder), validated against each builder's defaults;
* :func:`encode`: normalisation, backbone, chosen pyramid levels;
* :func:`fuse_levels` (HRNet's multi-scale fusion) and :func:`fpn_neck` (a feature pyramid for
  ResNets), which run on the encoder side of the :class:`SharedRepresentation` marker;
  :func:`fused_representation` (PAD-Net's and PAP-Net's shared representation: the levels fused
  and marked);
* residual blocks (:func:`basic_block`, :func:`bottleneck_block`), :func:`spatial_attention`,
  :func:`squeeze_excitation` and :func:`multimodal_distillation` (PAD-Net's distillation unit,
  also used per scale by MTI-Net);
* :func:`task_prediction`: two residual blocks and a classifier, the initial, per-scale and
  final task heads of PAD-Net, PAP-Net and MTI-Net.

Every layer is named after the task it belongs to (``f"{task}_{block}"``) so checkpoints and
``get_layer`` stay stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from mtl_keras import backbones
from mtl_keras.architectures.base import ImageNormalization, SharedRepresentation
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import resolve

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
LEVELS = ("P2", "P3", "P4", "P5")


def decoder_options(
    arch: str,
    head: str,
    head_kwargs: Mapping | None,
    defaults: Mapping,
    accepted: tuple[str, ...] = ("hrnet",),
) -> dict:
    """The decoder options of ``arch``: ``defaults`` updated by ``head_kwargs``.

    Decoder-focused architectures build their own task heads (initial heads, distillation, final
    heads) as the survey's HRNet configurations do, so ``head`` must be one of ``accepted``
    (``"hrnet"``, the survey's setting; the transformer decoders also take their own name) and
    ``head_kwargs`` carries the decoder's options (it is the field recipes already have).

    Raises:
        ValueError: for another head or an unknown option, naming the valid ones.
    """
    if head not in accepted:
        wanted = " or ".join(repr(h) for h in accepted)
        raise ValueError(
            f"{arch} builds its own task heads; head must be {wanted} (the recipes' default is "
            f"'hrnet'), got {head!r}. Configure the decoder with head_kwargs (valid keys: "
            f"{sorted(defaults)})"
        )
    given = dict(head_kwargs or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"{arch}: unknown decoder option(s) {unknown} in head_kwargs; valid options and "
            f"defaults: {dict(defaults)}"
        )
    return {**defaults, **given}


def auxiliary_specs(specs: Mapping, auxiliary_tasks, task_options: Mapping | None) -> dict:
    """TaskSpecs of the auxiliary tasks, which must differ from the main ``specs``."""
    aux = resolve(list(auxiliary_tasks), task_options) if auxiliary_tasks else {}
    both = sorted(set(aux) & set(specs))
    if both:
        raise ValueError(
            f"tasks {both} are both predicted and auxiliary; an auxiliary task has initial "
            "predictions only, so list each task once"
        )
    return aux


def encode(
    image: keras.KerasTensor,
    backbone: str | keras.Model,
    backbone_kwargs: Mapping | None,
    levels: Sequence[str],
) -> list:
    """Normalise the raw image, run the backbone, return the chosen pyramid levels (unmarked)."""
    if isinstance(backbone, str):
        backbone = backbones.get(backbone, **dict(backbone_kwargs or {}))
    pyramid = backbone(ImageNormalization(name="normalize")(image))
    missing = [f for f in levels if f not in pyramid]
    if missing or not levels:
        raise ValueError(
            f"backbone has no level(s) {missing or list(levels)}; it provides {sorted(pyramid)}. "
            "Choose pyramid levels with head_kwargs={'features': [...]}"
        )
    return [pyramid[f] for f in levels]


def mark(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """Declare ``x`` part of the shared representation (one marker per tensor)."""
    return SharedRepresentation(name=f"shared_{name}")(x)


def is_hrnet(backbone: str | keras.Model) -> bool:
    """Whether the backbone is an HRNet (its levels are already a multi-resolution pyramid)."""
    name = backbone if isinstance(backbone, str) else backbone.name
    return name.lower().startswith("hrnet")


def conv_bn(
    x,
    filters: int,
    size: int,
    name: str,
    *,
    stride: int = 1,
    relu: bool = True,
    sync_batchnorm: bool = True,
):
    """Bias-free "same" convolution, BatchNormalization and (optionally) ReLU.

    Layers are named ``f"{name}_conv"``, ``f"{name}_bn"`` and ``f"{name}_relu"``.
    """
    x = keras.layers.Conv2D(
        filters, size, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, synchronized=sync_batchnorm, name=f"{name}_bn"
    )(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _residual(x, y, filters: int, name: str, sync_batchnorm: bool):
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = conv_bn(
            x, filters, 1, f"{name}_shortcut", relu=False, sync_batchnorm=sync_batchnorm
        )
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def basic_block(x, filters: int, name: str, *, sync_batchnorm: bool = True):
    """ResNet basic block (two 3x3 conv + BN), projected shortcut when the width changes.

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    opts = {"sync_batchnorm": sync_batchnorm}
    y = conv_bn(x, filters, 3, f"{name}_a", **opts)
    y = conv_bn(y, filters, 3, f"{name}_b", relu=False, **opts)
    return _residual(x, y, filters, name, sync_batchnorm)


def bottleneck_block(x, filters: int, name: str, *, sync_batchnorm: bool = True):
    """ResNet bottleneck block: 1x1 (filters/4), 3x3 (filters/4), 1x1 (filters), residual."""
    opts = {"sync_batchnorm": sync_batchnorm}
    mid = max(filters // 4, 1)
    y = conv_bn(x, mid, 1, f"{name}_a", **opts)
    y = conv_bn(y, mid, 3, f"{name}_b", **opts)
    y = conv_bn(y, filters, 1, f"{name}_c", relu=False, **opts)
    return _residual(x, y, filters, name, sync_batchnorm)


def classifier(x, out_channels: int, name: str):
    """The 1x1 convolution (with bias) to a task's raw outputs, named ``f"{name}_classifier"``."""
    return keras.layers.Conv2D(out_channels, 1, name=f"{name}_classifier")(x)


def task_prediction(
    x,
    width: int,
    out_channels: int,
    name: str,
    *,
    block=bottleneck_block,
    sync_batchnorm: bool = True,
):
    """Two residual blocks and a :func:`classifier`: a task's features and its raw prediction.

    Layers are named ``f"{name}_block1_*"``, ``f"{name}_block2_*"`` and ``f"{name}_classifier"``.

    Args:
        x: the input features.
        width: channels of the blocks, i.e. of the returned features.
        out_channels: channels of the prediction (the task's output channels).
        name: prefix of the layer names (e.g. ``f"{task}_initial"``).
        block: :func:`bottleneck_block` (PAD-Net, PAP-Net) or :func:`basic_block` (MTI-Net).
        sync_batchnorm: synchronise batch statistics across replicas.

    Returns:
        ``(features, prediction)``: the second block's output ``(B, h, w, width)`` and the
        classifier's ``(B, h, w, out_channels)``, at the resolution of ``x``.
    """
    x = block(x, width, f"{name}_block1", sync_batchnorm=sync_batchnorm)
    features = block(x, width, f"{name}_block2", sync_batchnorm=sync_batchnorm)
    return features, classifier(features, out_channels, name)


def spatial_attention(x, filters: int, name: str):
    """PAD-Net's attention-guided message: ``sigmoid(conv3x3(x)) * conv3x3(x)``.

    Xu et al., "PAD-Net: Multi-Tasks Guided Prediction-and-Distillation Network", CVPR 2018,
    Sec. 3.3 (distillation module C).
    """
    mask = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False, activation="sigmoid", name=f"{name}_mask"
    )(x)
    message = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(
        x
    )
    return keras.layers.Multiply(name=f"{name}_gate")([message, mask])


def squeeze_excitation(x, name: str, ratio: int = 16):
    """Channel attention (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

    Global average pool, ``Dense(C / ratio) + ReLU``, ``Dense(C) + sigmoid``, rescale ``x``.
    """
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = keras.layers.Dense(max(channels // ratio, 1), activation="relu", name=f"{name}_reduce")(s)
    s = keras.layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def multimodal_distillation(
    features: Mapping[str, keras.KerasTensor],
    suffix: str = "",
    targets: Sequence[str] | None = None,
) -> dict:
    """PAD-Net's multi-modal distillation: ``F_t + sum_{a != t} SA_{t<-a}(F_a)`` for every task.

    Each target task receives an attention-gated message from every other task (Xu et al., CVPR
    2018, Eq. 3); with a single task the features pass unchanged. Layers are named
    ``f"{t}{suffix}_from_{a}_*"``.

    Args:
        features: ``{task: (B, h, w, C)}`` task features of equal shape (auxiliary tasks
            included: they send messages).
        suffix: appended to the task name in layer names (e.g. ``"_s2"`` for a scale).
        targets: the tasks that receive messages (default: all of ``features``); auxiliary tasks,
            which have no final prediction, are left out.

    Returns:
        ``{task: (B, h, w, C)}`` distilled features of the targets.
    """
    out = {}
    for t in features if targets is None else targets:
        x = features[t]
        messages = [
            spatial_attention(features[a], x.shape[-1], f"{t}{suffix}_from_{a}")
            for a in features
            if a != t
        ]
        out[t] = keras.layers.Add(name=f"{t}{suffix}_distill")([x, *messages]) if messages else x
    return out


def fuse_levels(levels: Sequence, name: str, *, sync_batchnorm: bool = True):
    """HRNet's representation fusion: resize every level to the first, concatenate, 1x1 conv.

    Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI
    2020; the survey's ``HighResolutionFuse`` (the HRNet head without its classifier), which its
    PAD-Net runs on HRNet-W18 (270 channels at 1/4 resolution). One level passes unchanged.
    """
    levels = list(levels)
    if len(levels) == 1:
        return levels[0]
    first = levels[0]
    resized = [first] + [
        ResizeLike(name=f"{name}_resize{i}")([x, first]) for i, x in enumerate(levels[1:], 2)
    ]
    x = keras.layers.Concatenate(name=f"{name}_concat")(resized)
    return conv_bn(x, x.shape[-1], 1, name, sync_batchnorm=sync_batchnorm)


def fused_representation(
    image: keras.KerasTensor,
    backbone: str | keras.Model,
    backbone_kwargs: Mapping | None,
    levels: Sequence[str],
    *,
    sync_batchnorm: bool = True,
) -> keras.KerasTensor:
    """The chosen pyramid levels fused at the finest resolution, marked as shared.

    :func:`encode`, then :func:`fuse_levels` (layers ``fuse_*``), then :func:`mark` (layer
    ``shared_fused``, or ``f"shared_{level}"`` for a single level, which passes unfused). The
    decoder input of PAD-Net and PAP-Net.

    Args:
        image: the raw image input.
        backbone: registered backbone name or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        levels: pyramid level names, finest first.
        sync_batchnorm: synchronise batch statistics across replicas.
    """
    names = list(levels)
    fused = fuse_levels(
        encode(image, backbone, backbone_kwargs, names), "fuse", sync_batchnorm=sync_batchnorm
    )
    return mark(fused, "fused" if len(names) > 1 else names[0])


def fpn_neck(levels: Sequence, channels: int, *, sync_batchnorm: bool = True) -> list:
    """A feature pyramid (Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017).

    Lateral 1x1 convolutions bring every level to ``channels``; a top-down pass adds each coarser
    level, bilinearly resized, to the next finer one; a 3x3 conv + BN + ReLU smooths the sums.
    Used by MTI-Net on ResNets, whose levels are wide and (when dilated) of equal resolution.
    Layers are named ``fpn_lateral{k}`` and ``fpn_smooth{k}`` with ``k`` the level index.

    Args:
        levels: feature maps, finest first.
        channels: width of every output level.
        sync_batchnorm: synchronise batch statistics across replicas.

    Returns:
        The smoothed levels, finest first, each with ``channels`` channels.
    """
    laterals = [
        keras.layers.Conv2D(channels, 1, name=f"fpn_lateral{k}")(x) for k, x in enumerate(levels)
    ]
    merged = [laterals[-1]]
    for k in range(len(laterals) - 2, -1, -1):
        up = ResizeLike(name=f"fpn_up{k}")([merged[0], laterals[k]])
        merged.insert(0, keras.layers.Add(name=f"fpn_merge{k}")([laterals[k], up]))
    return [
        conv_bn(x, channels, 3, f"fpn_smooth{k}", sync_batchnorm=sync_batchnorm)
        for k, x in enumerate(merged)
    ]


def to_image(x, image, task: str):
    """Resize a task's final prediction to the input resolution; the layer is named ``task``."""
    return ResizeLike(interpolation="bilinear", name=task)([x, image])
