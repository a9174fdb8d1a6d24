"""Light heads and the resize layer shared by all heads.

* :class:`ResizeLike`: resize a tensor to the spatial size of another (works with dynamic sizes).
* :func:`conv_head`: a few 3x3 conv + BN + ReLU blocks and a 1x1 classifier (demos, tests).
* :func:`hrnet_head`: the HRNet representation head (Wang et al., "Deep High-Resolution
  Representation Learning for Visual Recognition", TPAMI 2020): all levels upsampled to the
  first one's resolution, concatenated, fused by 1x1 conv + BN + ReLU, then a 1x1 classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

_INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5")
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="mtl_keras")
class ResizeLike(keras.layers.Layer):
    """Resize ``x`` (B, h, w, C) to the height and width of ``reference`` (B, H, W, ...).

    Bilinear resizing uses half-pixel centres without antialiasing, i.e. PyTorch's
    ``F.interpolate(x, size, mode="bilinear", align_corners=False)``.

    Example:
        >>> x, ref = keras.ops.ones((2, 4, 4, 3)), keras.ops.ones((2, 16, 12, 1))
        >>> tuple(ResizeLike()([x, ref]).shape)
        (2, 16, 12, 3)
    """

    def __init__(self, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {interpolation!r}; valid: {', '.join(_INTERPOLATIONS)}"
            )
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        # static sizes where known, else dynamic; ``ops.image.resize`` rejects dynamic sizes
        # in graph mode, hence TensorFlow's resize (mtl_keras runs on the TensorFlow backend)
        dynamic = tf.shape(reference)
        size = [
            reference.shape[i] if reference.shape[i] is not None else dynamic[i] for i in (1, 2)
        ]
        resized = tf.image.resize(x, size, method=self.interpolation, antialias=False)
        return ops.cast(resized, x.dtype)

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


def conv_bn_relu(
    x, filters: int, size: int, name: str, *, dilation: int = 1, sync_batchnorm: bool = True
):
    """Bias-free ``size`` x ``size`` "same" convolution, BatchNormalization and ReLU.

    Layers are named ``f"{name}_conv"``, ``f"{name}_bn"`` and ``f"{name}_relu"``.
    """
    x = keras.layers.Conv2D(
        filters, size, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_conv"
    )(x)
    x = keras.layers.BatchNormalization(
        epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, synchronized=sync_batchnorm, name=f"{name}_bn"
    )(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def classifier(x, out_channels: int, name: str):
    """The final 1x1 convolution (with bias) of every head, named ``f"{name}_classifier"``."""
    return keras.layers.Conv2D(out_channels, 1, name=f"{name}_classifier")(x)


def conv_head(
    features,
    out_channels: int,
    *,
    name: str,
    filters: int = 64,
    num_convs: int = 2,
    sync_batchnorm: bool = True,
) -> keras.KerasTensor:
    """``num_convs`` blocks of 3x3 conv + BN + ReLU, then a 1x1 conv to ``out_channels``.

    Args:
        features: (B, h, w, C) feature map.
        out_channels: channels of the prediction.
        name: prefix of every layer name (``f"{name}_block1_conv"``, ..., ``f"{name}_classifier"``).
        filters: channels of the hidden blocks.
        num_convs: number of 3x3 blocks (0 gives a linear 1x1 head).
        sync_batchnorm: synchronise batch statistics across replicas.

    Returns:
        (B, h, w, out_channels) logits at the resolution of ``features``.

    Example:
        >>> x = keras.Input((None, None, 16))
        >>> tuple(conv_head(x, 5, name="semseg", filters=8).shape)
        (None, None, None, 5)
    """
    x = features
    for i in range(1, num_convs + 1):
        x = conv_bn_relu(x, filters, 3, f"{name}_block{i}", sync_batchnorm=sync_batchnorm)
    return classifier(x, out_channels, name)


def hrnet_head(
    features: Sequence,
    out_channels: int,
    *,
    name: str,
    sync_batchnorm: bool = True,
) -> keras.KerasTensor:
    """The HRNet head (Wang et al., TPAMI 2020): upsample, concatenate, fuse, classify.

    Every level is resized bilinearly to the first (highest-resolution) level; the concatenation
    (``C = sum`` of the levels' channels) goes through 1x1 conv (C channels) + BN + ReLU and a
    1x1 conv to ``out_channels``.

    Args:
        features: feature maps, highest resolution first (e.g. ``[P2, P3, P4, P5]``).
        out_channels: channels of the prediction.
        name: prefix of every layer name (``f"{name}_resize2"``, ``f"{name}_fuse_conv"``, ...).
        sync_batchnorm: synchronise batch statistics across replicas.

    Returns:
        (B, H, W, out_channels) logits at the resolution of ``features[0]``.

    Example:
        >>> p2, p3 = keras.Input((None, None, 8)), keras.Input((None, None, 16))
        >>> tuple(hrnet_head([p2, p3], 3, name="depth").shape)
        (None, None, None, 3)
    """
    features = list(features)
    if not features:
        raise ValueError("hrnet_head needs at least one feature map, got an empty list")
    first = features[0]
    resized = [first] + [
        ResizeLike(interpolation="bilinear", name=f"{name}_resize{i}")([f, first])
        for i, f in enumerate(features[1:], start=2)
    ]
    x = resized[0]
    if len(resized) > 1:
        x = keras.layers.Concatenate(name=f"{name}_concat")(resized)
    x = conv_bn_relu(x, x.shape[-1], 1, f"{name}_fuse", sync_batchnorm=sync_batchnorm)
    return classifier(x, out_channels, name)
