"""Dilated ResNet backbones returning a feature pyramid.

ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with the stride on
the 3x3 convolution of the bottleneck (torchvision's "v1.5"). The output stride is reduced to 16
or 8 by replacing the stride of the last stages with dilation, as in DeepLab (Chen et al.,
"Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv 2017), with the semantics
of the survey's ``_nostride_dilate`` (Vandenhende et al., TPAMI 2022, ``models/resnet_dilated.py``,
after Zhou et al.'s ADE20K code): in a stage dilated by ``d``, the 3x3 convolution that carried
the stride gets dilation ``d / 2`` and every other 3x3 convolution of the stage gets ``d``
(torchvision's ``replace_stride_with_dilation`` instead keeps the whole first block at the
previous dilation, which differs for basic blocks: ``stage3_block1_conv2`` 2 here, 1 there).
Dilation changes no parameter count.

Every strided or dilated convolution pads explicitly and symmetrically like PyTorch
(``ZeroPadding2D`` then ``"valid"``), so weights converted from torchvision give the same outputs.
The builder returns a plain functional ``keras.Model`` whose output is a dict keyed like
keras-hub's ``pyramid_outputs``: ``"P2"`` (stage 1, stride 4) to ``"P5"`` (stage 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mtl_keras.backbones._blocks import EXPANSION, ConvBN, residual_block

#: blocks per stage and block type for each supported depth
RESNET_SPECS: dict[int, tuple[tuple[int, int, int, int], str]] = {
    10: ((1, 1, 1, 1), "basic"),  # the smallest member of the family, for tests and demos
    18: ((2, 2, 2, 2), "basic"),
    34: ((3, 4, 6, 3), "basic"),
    50: ((3, 4, 6, 3), "bottleneck"),
    101: ((3, 4, 23, 3), "bottleneck"),
}
#: stride of each stage (1..4) and dilation of its blocks, per output stride
_STAGE_LAYOUT: dict[int, tuple[tuple[int, int], ...]] = {
    32: ((1, 1), (2, 1), (2, 1), (2, 1)),
    16: ((1, 1), (2, 1), (2, 1), (1, 2)),
    8: ((1, 1), (2, 1), (1, 2), (1, 4)),
}
_BN_MOMENTUM = 0.9  # Keras convention; PyTorch's momentum 0.1


def _check(depth: int, output_stride: int) -> None:
    if depth not in RESNET_SPECS:
        raise ValueError(
            f"unsupported ResNet depth {depth!r}; valid depths: {sorted(RESNET_SPECS)}"
        )
    if output_stride not in _STAGE_LAYOUT:
        raise ValueError(
            f"unsupported output_stride {output_stride!r}; valid values: "
            f"{sorted(_STAGE_LAYOUT)} (32 = no dilation, 16 and 8 dilate the last stages)"
        )


def pyramid_channels(depth: int, width: int = 64) -> dict[str, int]:
    """Channels of each pyramid level of :func:`build_resnet`.

    Example:
        >>> pyramid_channels(50)
        {'P2': 256, 'P3': 512, 'P4': 1024, 'P5': 2048}
    """
    _check(depth, 32)
    expansion = EXPANSION[RESNET_SPECS[depth][1]]
    return {f"P{i + 2}": width * 2**i * expansion for i in range(4)}


def pyramid_strides(output_stride: int = 32) -> dict[str, int]:
    """Stride (input pixels per feature pixel) of each pyramid level for an output stride.

    Example:
        >>> pyramid_strides(8)
        {'P2': 4, 'P3': 8, 'P4': 8, 'P5': 8}
    """
    _check(18, output_stride)
    strides, stride = {}, 2 * 2  # stem convolution and max-pool
    for i, (stage_stride, _) in enumerate(_STAGE_LAYOUT[output_stride]):
        stride *= stage_stride
        strides[f"P{i + 2}"] = stride
    return strides


def build_resnet(
    depth: int = 18,
    *,
    output_stride: int = 32,
    width: int = 64,
    input_shape: Sequence[int | None] = (None, None, 3),
    sync_batchnorm: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Build a (dilated) ResNet returning ``{"P2", "P3", "P4", "P5"}`` feature maps.

    Layers are named ``stem_conv``, ``stem_bn``, ``stage{s}_block{b}_conv{k}``,
    ``stage{s}_block{b}_bn{k}``, ``stage{s}_block{b}_shortcut_{conv,bn}`` with ``s`` in 1..4
    (torchvision's ``layer{s}``) and ``b`` counted from 1.

    Args:
        depth: 18 or 34 (basic blocks) or 50 or 101 (bottleneck blocks, expansion 4).
        output_stride: 32 (plain ResNet), 16 (stage 4 dilated by 2) or 8 (stages 3 and 4
            dilated by 2 and 4); see :func:`pyramid_strides`.
        width: base channel count; 64 is the ImageNet ResNet, smaller values make tiny models.
        input_shape: ``(H, W, 3)`` of the already normalised float32 images; None = any size.
        sync_batchnorm: batch statistics over all replicas under ``tf.distribute``
            (``BatchNormalization(synchronized=True)``; no effect on one device).
        name: model name, default ``f"resnet{depth}"``.

    Returns:
        A functional ``keras.Model`` mapping images to a dict of 4 feature maps whose channels
        are :func:`pyramid_channels` and strides :func:`pyramid_strides`.

    Example:
        >>> model = build_resnet(18, output_stride=8, width=8, input_shape=(64, 64, 3))
        >>> {k: tuple(v.shape) for k, v in model.output.items()}["P5"]
        (None, 8, 8, 64)
    """
    _check(depth, output_stride)
    if width < 1:
        raise ValueError(f"width must be a positive channel count, got {width!r}; 64 = ImageNet")
    blocks, kind = RESNET_SPECS[depth]
    layers = ConvBN(sync_batchnorm, _BN_MOMENTUM)

    # === Stem: 7x7/2 convolution, BN, ReLU, 3x3/2 max-pool ===
    images = keras.Input(tuple(input_shape), name="images")
    x = layers.conv_bn(images, width, 7, "stem", stride=2)
    x = keras.layers.ReLU(name="stem_relu")(x)
    # zero padding equals PyTorch's -inf padding here because the inputs are >= 0 after ReLU
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)

    # === Stages ===
    pyramid, dilation = {}, 1
    for s, (n_blocks, (stride, stage_dilation)) in enumerate(
        zip(blocks, _STAGE_LAYOUT[output_stride], strict=True), start=1
    ):
        for b in range(1, n_blocks + 1):
            x = residual_block(
                layers,
                x,
                kind,
                width * 2 ** (s - 1),
                f"stage{s}_block{b}",
                stride=stride if b == 1 else 1,
                dilation=stage_dilation,
                first_dilation=dilation if b == 1 else None,
            )
        dilation = stage_dilation
        pyramid[f"P{s + 1}"] = x
    return keras.Model(images, pyramid, name=name or f"resnet{depth}")
